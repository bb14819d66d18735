// The disk under the store fills up (a small tmpfs, and a ballast file taking most of it):
// layercache stops storing, keeps serving every blob whole and correct from the upstream, says
// so once in its metrics, and stores again once space frees. And when something else fills the
// disk faster than layercache's own check sees (min_free_disk 0: RocksDB meets ENOSPC itself),
// round after round, the daemon never aborts, never hangs at SIGTERM, and reopens its store.
// Needs root (mount); skipped (visibly) without it.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "oci/digest.hpp"
#include "tests/support/daemon_process.hpp"
#include "tests/support/exposition.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t MiB = 1024 * 1024;

// A tmpfs of `size` mounted on a temp dir, unmounted (lazily) on destruction.
class small_disk {
 public:
  explicit small_disk(std::size_t size) {
    const std::string options = "size=" + std::to_string(size);
    mounted_ = ::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, options.c_str()) == 0;
  }
  ~small_disk() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  small_disk(const small_disk&) = delete;
  small_disk& operator=(const small_disk&) = delete;
  [[nodiscard]] bool mounted() const { return mounted_; }
  [[nodiscard]] const std::filesystem::path& path() const { return dir_.path(); }

 private:
  temp_dir dir_{"lc-small-disk"};
  bool mounted_ = false;
};

void write_ballast(const std::filesystem::path& path, std::size_t size) {
  std::ofstream out(path, std::ios::binary);
  const std::string block(MiB, 'b');
  for (std::size_t i = 0; i < size / MiB && out; ++i) out.write(block.data(), block.size());
}

std::size_t free_bytes(const std::filesystem::path& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return 0;
  return std::size_t{st.f_bavail} * st.f_frsize;
}

// Rounds of DiskFull.RoundsOfRocksDbMeetingAFullDiskNeverAbortOrHang: DISK_FULL_ROUNDS, else 4
// (the reproduction needed 25 for two aborts; run 50 by hand: docs/reliability.md).
int rounds_from_env() { return count_from_env("DISK_FULL_ROUNDS", 4); }

// One GET of a blob while the disk may be full: the exact bytes, or a clean failure (an error
// status, or a connection closed before the body's end) — never a 200 with other bytes.
enum class pull_result { exact, failed_cleanly };

pull_result pull_blob(http_client& client, const std::string& url, const blob& b,
                      std::string& wrong) {
  http_response r;
  try {
    r = client.request("GET", url, {}, {}, std::chrono::seconds(120));
  } catch (const std::exception&) {
    return pull_result::failed_cleanly;  // cut short: the client saw an error, not a body
  }
  if (r.status != 200) return pull_result::failed_cleanly;
  if (r.body.size() != b.data.size() || oci::digest_of(r.body) != b.digest) {
    wrong += b.digest.str() + ": 200 with " + std::to_string(r.body.size()) + " wrong bytes\n";
  }
  return pull_result::exact;
}

TEST(DiskFull, StoringStopsServingGoesOnAndResumesWhenSpaceFrees) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  small_disk disk(448 * MiB);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here";
  // 448 MiB disk, 320 MiB of ballast, min_free_disk 64 MiB: about 60 MiB can be stored.
  write_ballast(disk.path() / "ballast", 320 * MiB);

  registry_process upstream;
  const auto img = make_image(image_format::oci, {40 * MiB, 40 * MiB, 40 * MiB}, 808);
  registry_pusher(upstream.url()).push_image("big/app", "v1", img);
  layercache_instance proxy("cache:\n  path: " + (disk.path() / "store").string() +
                            "\n  capacity: 10GiB\n  min_free_disk: 64MiB\n"
                            "prefetch: {eager_layers: never, fetch_published: false}\n"
                            "upstreams:\n" +
                            upstream_yaml("up", upstream.url(), true));
  http_client client;
  const std::string admin = "http://127.0.0.1:" + std::to_string(proxy.srv().admin_port());
  auto scrape = [&] { return parse_exposition(client.get(admin + "/metrics").body); };
  auto pull_all = [&](std::string_view round) {
    for (const auto& layer : img.layers) {
      SCOPED_TRACE(std::string(round) + " " + layer.digest.str());
      const auto r = client.get(proxy.url() + "/v2/big/app/blobs/" + layer.digest.str());
      ASSERT_EQ(r.status, 200u);
      ASSERT_EQ(r.body.size(), layer.data.size());
      EXPECT_EQ(oci::digest_of(r.body), layer.digest);
    }
  };

  pull_all("first");
  auto m = scrape();
  EXPECT_GT(metric_value(m, "layercache_cache_disk_refusals_total"), 0);
  // Still full — or storing again: the store resumes by itself once the disk has room
  // (rocksdb_backend::resume_if_room), and a compaction that deleted its inputs can give room
  // back after the refusals. `disk_full` is as the next chunk would find it: 0 only with
  // min_free_disk free beyond what the memtables will take, in the same scrape. (Read against
  // the disk a moment later it failed under ctest -j2: 19 and 34 MB free, a compaction or a
  // flush between the last chunk stored and the check.)
  if (metric_value(m, "layercache_cache_disk_full") != 1) {
    EXPECT_GE(metric_value(m, "layercache_cache_disk_free_bytes") -
                  metric_value(m, "layercache_cache_write_buffer_bytes"),
              64.0 * MiB)
        << "not storing, yet not full either";
  }
  const double stored_when_full = metric_value(m, "layercache_cache_used_bytes");
  EXPECT_LT(stored_when_full, 3.0 * 40 * MiB) << "everything was stored on a disk too small";

  pull_all("second, still full");  // whole and correct, from store and upstream together

  // Space frees: storing resumes, and the blobs end up cached.
  std::filesystem::remove(disk.path() / "ballast");
  std::this_thread::sleep_for(200ms);  // the free space is read at most every 100 ms
  pull_all("third");
  m = scrape();
  EXPECT_EQ(metric_value(m, "layercache_cache_disk_full"), 0);
  EXPECT_GT(metric_value(m, "layercache_cache_used_bytes"), stored_when_full);
}

// cache.max_disk on a disk with room to spare: the store's files stay within it (a compaction,
// then evictions of the least recently used), every pull stays whole and correct, and the
// gauges say so. No root needed.
TEST(DiskFull, MaxDiskBoundsTheStoresFiles) {
  registry_process upstream;
  const auto img = make_image(image_format::oci, {100 * MiB, 100 * MiB, 100 * MiB}, 909);
  registry_pusher(upstream.url()).push_image("big/app", "v1", img);
  temp_dir dir("lc-max-disk");
  layercache_instance proxy("cache:\n  path: " + (dir.path() / "store").string() +
                            "\n  capacity: 256MiB\n  max_disk: 256MiB\n"
                            "prefetch: {eager_layers: never, fetch_published: false}\n"
                            "upstreams:\n" +
                            upstream_yaml("up", upstream.url(), true));
  http_client client;
  const std::string admin = "http://127.0.0.1:" + std::to_string(proxy.srv().admin_port());
  // 300 MiB through a 256 MiB limit (one pass: the test also runs under ASan at -O0).
  for (const auto& layer : img.layers) {
    SCOPED_TRACE(layer.digest.str());
    const auto r = client.get(proxy.url() + "/v2/big/app/blobs/" + layer.digest.str());
    ASSERT_EQ(r.status, 200u);
    EXPECT_EQ(oci::digest_of(r.body), layer.digest);
  }
  // A compaction writes its new files before it deletes the old ones: while one runs, the
  // files can exceed the limit by what it rewrites (docs/configuration.md, max_disk). Once it
  // is done they are within it, give or take what is stored between two reads of their size.
  constexpr double bound = 256.0 * MiB + 16.0 * MiB;
  auto m = parse_exposition(client.get(admin + "/metrics").body);
  double peak = metric_value(m, "layercache_cache_disk_bytes");
  for (int i = 0; i < 300 && metric_value(m, "layercache_cache_disk_bytes") > bound; ++i) {
    std::this_thread::sleep_for(200ms);
    m = parse_exposition(client.get(admin + "/metrics").body);
    peak = std::max(peak, metric_value(m, "layercache_cache_disk_bytes"));
  }
  std::cout << "files after the pulls: up to " << peak / MiB << " MiB, then "
            << metric_value(m, "layercache_cache_disk_bytes") / MiB << " MiB\n";
  EXPECT_LE(metric_value(m, "layercache_cache_disk_bytes"), bound);
  EXPECT_EQ(metric_value(m, "layercache_cache_disk_max_bytes"), 256.0 * MiB);
  EXPECT_GE(metric_value(m, "layercache_cache_disk_compactions_total"), 1);
  EXPECT_GT(metric_value(m, "layercache_cache_disk_bytes"), 0);
  EXPECT_LE(metric_value(m, "layercache_cache_used_bytes"), 256.0 * MiB);
  // The gauge is the disk's free space: other writers on this file system (a build, other
  // tests) move it between the daemon's reading and ours, so a few tries, each near.
  double gauge = 0;
  double actual = 0;
  for (int i = 0; i < 20; ++i) {
    gauge = metric_value(parse_exposition(client.get(admin + "/metrics").body),
                         "layercache_cache_disk_free_bytes");
    actual = static_cast<double>(free_bytes(dir.path()));
    if (std::abs(gauge - actual) <= 64.0 * MiB) break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_NEAR(gauge, actual, 64.0 * MiB);
}

// The reproduction of the abort and the hang at shutdown (issue 26): a disk filled by someone
// else, RocksDB's own writes failing (flushes, compactions, file creation), space coming back,
// SIGTERM — round after round on the same store.
TEST(DiskFull, RoundsOfRocksDbMeetingAFullDiskNeverAbortOrHang) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  small_disk disk(640 * MiB);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here";
  registry_process upstream;
  temp_dir work("lc-disk-full");
  daemon_process daemon(
      daemon_options{.binary = LAYERCACHED_PATH,
                     .dir = work.path(),
                     .upstream_url = upstream.url(),
                     .cache_yaml = "  capacity: 192MiB\n  chunk_size: 1MiB\n  min_free_disk: 0\n",
                     .extra_yaml = "prefetch: {eager_layers: never, fetch_published: false}\n",
                     .store = disk.path() / "store",
                     .shutdown = std::chrono::seconds(5),
                     .admin = true});
  daemon.start_first();
  http_client client;
  const int rounds = rounds_from_env();
  std::string wrong;
  int failed_pulls = 0;
  for (int round = 0; round < rounds && !HasFailure(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const auto img = make_image(image_format::oci, {40 * MiB, 40 * MiB, 40 * MiB},
                                9000 + static_cast<std::uint64_t>(round));
    const std::string repo = "full/r" + std::to_string(round);
    registry_pusher(upstream.url()).push_image(repo, "v1", img);
    // Leave 72 MiB: less than the three blobs, more than nothing.
    const std::size_t free_now = free_bytes(disk.path());
    if (free_now > 72 * MiB) write_ballast(disk.path() / "ballast", free_now - 72 * MiB);
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& layer : img.layers) {
        const auto url = daemon.url() + "/v2/" + repo + "/blobs/" + layer.digest.str();
        if (pull_blob(client, url, layer, wrong) == pull_result::failed_cleanly) ++failed_pulls;
      }
      ASSERT_TRUE(daemon.running()) << "layercached died with the disk full:\n" << daemon.logs();
      std::filesystem::remove(disk.path() / "ballast");  // space comes back for the second pass
    }
    const int status = daemon.terminate(std::chrono::seconds(60));
    ASSERT_EQ(status, 0) << "SIGTERM after a full disk: exit " << status << "\n" << daemon.logs();
    daemon.restart();  // the same store reopens
  }
  EXPECT_EQ(wrong, "");
  EXPECT_EQ(daemon.logs().find("Assertion"), std::string::npos) << daemon.logs();
  EXPECT_NE(daemon.logs().find("the store stopped writing"), std::string::npos)
      << "RocksDB never met the full disk: the scenario tested nothing";
  // Writing resumed once the disk had room: the last round's blobs, pulled again with space
  // free, were stored and survived the restart (capacity 192 MiB holds them, 120 MiB).
  const auto m = parse_exposition(client.get(daemon.admin_url() + "/metrics").body);
  EXPECT_GE(metric_value(m, "layercache_cache_used_bytes"), 3.0 * 40 * MiB) << daemon.logs();
  EXPECT_EQ(metric_value(m, "layercache_cache_disk_full"), 0);
  std::cout << "disk-full rounds: " << rounds << ", pulls that failed cleanly: " << failed_pulls
            << " of " << rounds * 6 << "\n";
  (void)daemon.terminate();
}

}  // namespace
}  // namespace layercache::testing
