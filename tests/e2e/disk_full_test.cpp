// The disk under the store fills up (a small tmpfs, and a ballast file taking most of it):
// layercache stops storing, keeps serving every blob whole and correct from the upstream, says
// so once in its metrics, and stores again once space frees. Needs root (mount); skipped
// (visibly) without it.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "oci/digest.hpp"
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
  for (std::size_t i = 0; i < size / MiB; ++i) out.write(block.data(), block.size());
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
  EXPECT_EQ(metric_value(m, "layercache_cache_disk_full"), 1);
  EXPECT_GT(metric_value(m, "layercache_cache_disk_refusals_total"), 0);
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

}  // namespace
}  // namespace layercache::testing
