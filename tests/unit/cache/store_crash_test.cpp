// The RocksDB store killed (SIGKILL) at random moments while it writes chunks, verifies,
// erases and saves profiles, then reopened: every time, what it holds is consistent. Writes
// skip the write-ahead log (sync_writes: false), so a crash loses the writes since the last
// flush; it must never keep half of one (a record counting a chunk that is not there, a chunk
// without a record, a used-bytes figure that disagrees, a chunk that fails its checksum).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/chunk_store.hpp"
#include "oci/digest.hpp"
#include "tests/support/process.hpp"

extern char** environ;  // POSIX: the application declares it

namespace layercache::cache {
namespace {

using namespace std::chrono_literals;
constexpr std::uint32_t chunk_size = 64 * 1024;

oci::digest digest_n(std::uint64_t n) { return oci::digest_of("crash blob " + std::to_string(n)); }

std::string chunk_bytes(std::uint64_t blob, std::uint32_t index, std::size_t size) {
  std::string out(size, '\0');
  std::uint64_t x = blob * 0x9e3779b97f4a7c15ULL + index + 1;
  for (char& c : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return out;
}

std::unique_ptr<chunk_store> open(const std::string& path) {
  return open_rocksdb_store(store_options{.path = path,
                                          .capacity = 48ULL << 20,  // evictions happen too
                                          .block_cache = 8 << 20,
                                          .sync_writes = false});
}

// Created by the child once its first whole blob is verified (the parent's random moments
// start from there: a slow start under a sanitizer on a busy machine must not eat them).
std::string started_marker(const std::string& path) { return path + ".started"; }

// The child: writes until it is killed (or for 30 s at most). Blobs of 1..40 chunks; each one
// is written whole and verified, or partly; now and then one is erased or a profile saved.
[[noreturn]] void write_until_killed(const std::string& path, std::uint64_t seed) {
  auto store = open(path);
  bool started = false;
  std::mt19937_64 rng(seed);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  for (std::uint64_t blob = seed * 1000; std::chrono::steady_clock::now() < deadline; ++blob) {
    const auto d = digest_n(blob);
    const std::uint32_t chunks = 1 + static_cast<std::uint32_t>(rng() % 40);
    const std::uint64_t size = std::uint64_t{chunks} * chunk_size - rng() % 1000;
    const bool whole = rng() % 2 == 0;
    for (std::uint32_t i = 0; i < chunks; ++i) {
      if (!whole && rng() % 3 == 0) continue;
      const auto length = static_cast<std::size_t>(
          std::min<std::uint64_t>(chunk_size, size - std::uint64_t{i} * chunk_size));
      (void)store->put_chunk(d, size, chunk_size, i, chunk_bytes(blob, i, length));
    }
    if (whole) (void)store->mark_verified(d);
    if (whole && !started) {
      started = true;
      testing::write_file(started_marker(path), "1");
    }
    if (rng() % 7 == 0) (void)store->erase_blob(digest_n(blob - rng() % 5));
    if (rng() % 11 == 0) (void)store->put_profile(d, std::string(rng() % 5000, 'p'));
  }
  ::_exit(0);
}

// The writer is this test binary itself, started again with LC_STORE_CRASH_WRITER=<path>:<seed>
// (a fresh process: forking one that has used RocksDB would inherit a thread pool without its
// threads). It takes over before main().
const bool writer_mode = [] {
  const char* spec = std::getenv("LC_STORE_CRASH_WRITER");
  if (spec == nullptr) return false;
  const std::string s = spec;
  const auto colon = s.rfind(':');
  write_until_killed(s.substr(0, colon), std::stoull(s.substr(colon + 1)));
}();

pid_t start_writer(const std::string& path, std::uint64_t seed) {
  const std::string env = "LC_STORE_CRASH_WRITER=" + path + ":" + std::to_string(seed);
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(const_cast<char*>(env.c_str()));
  envp.push_back(nullptr);
  char self[] = "/proc/self/exe";
  char* argv[] = {self, nullptr};
  pid_t pid = -1;
  if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) != 0) return -1;
  return pid;
}

// Everything the reopened store holds agrees with itself.
void expect_consistent(chunk_store& store, int round) {
  SCOPED_TRACE("round " + std::to_string(round));
  std::uint64_t total = 0;
  for (const auto& e : store.list_blobs()) {
    const blob_record& r = e.record;
    std::uint64_t present = 0;
    const auto indexes = store.present_chunks(e.digest);
    for (auto i : indexes) {
      present += r.chunk_length(i);
      std::string bytes;
      const status s = store.get_chunk(e.digest, i, bytes);
      ASSERT_TRUE(s.ok()) << e.digest.str() << " chunk " << i << ": " << s.message;
      ASSERT_EQ(bytes.size(), r.chunk_length(i));
    }
    EXPECT_EQ(present, r.stored_bytes) << e.digest.str() << ": the record counts " << r.stored_bytes
                                       << " bytes, the chunks hold " << present;
    // No chunk is stored that the record's presence does not list.
    for (std::uint32_t i = 0, next = 0; i < r.chunk_count(); ++i) {
      if (next < indexes.size() && indexes[next] == i) {
        ++next;
        continue;
      }
      std::string bytes;
      EXPECT_EQ(store.get_chunk(e.digest, i, bytes).code, errc::not_found)
          << e.digest.str() << " chunk " << i << " is stored but not listed as present";
    }
    if (r.verified) {
      EXPECT_EQ(indexes.size(), r.chunk_count()) << e.digest.str() << " is verified but not whole";
    }
    total += r.stored_bytes;
  }
  EXPECT_EQ(store.used_bytes(), total);
  EXPECT_EQ(store.stats().corrupt_chunks, 0U);
}

TEST(StoreCrash, KilledAtRandomMomentsItAlwaysReopensConsistent) {
  testing::temp_dir dir("lc-crash");
  const std::string path = (dir.path() / "db").string();
  std::mt19937_64 rng(20261129);
  constexpr int rounds = 12;
  int survived_writes = 0;
  for (int round = 0; round < rounds; ++round) {
    std::filesystem::remove(started_marker(path));
    const pid_t child = start_writer(path, static_cast<std::uint64_t>(round) + 1);
    ASSERT_GT(child, 0);
    for (int wait = 0; wait < 6000 && !std::filesystem::exists(started_marker(path)); ++wait) {
      std::this_thread::sleep_for(10ms);  // at most 60 s
    }
    if (!std::filesystem::exists(started_marker(path))) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
      FAIL() << "round " << round << ": the writer verified no blob within 60 s";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 600));
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer ended before it was killed";

    auto store = open(path);  // must open: a crash never leaves it unopenable
    expect_consistent(*store, round);
    if (!store->list_blobs().empty()) ++survived_writes;
    if (::testing::Test::HasFailure()) return;
  }
  // Verified blobs ask for a flush: some writes survive the crashes.
  EXPECT_GT(survived_writes, 0);
}

}  // namespace
}  // namespace layercache::cache
