// Soak: mixed client traffic (whole blobs, random ranges, HEADs) from many threads through
// layercache, against an upstream that injects random faults into a share of its blob
// answers (resets, stalls and truncations mid-body, 5xx, 429 with Retry-After, shifted
// ranges, slow bodies), with a store small enough to evict all the time. Bounded by
// SOAK_SECONDS (default 40) and a request cap. It ends with:
//   - zero wrong bytes: every 200/206 body is compared with the blob, byte for byte;
//   - a clean store: with the faults off, every blob read whole is exact;
//   - no leaked descriptors: the process's open files after layercache and the upstream are
//     gone equal those before they started;
//   - flat memory: the heap layercache and the test hold (malloc's bytes in use) in the last
//     third of the run is within a bound of the first third. Resident memory is reported
//     too; it also counts what the allocator keeps after a free, which drifts up for minutes
//     with this many threads before it levels off (docs/reliability.md, "Soak").
// Prints a table row (and writes SOAK_REPORT as JSON when set) for docs/reliability.md.
#include <dirent.h>
#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "tests/support/exposition.hpp"
#include "tests/support/fault_upstream.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;
constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

long env_number(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtol(v, nullptr, 10);
}

std::size_t open_fds() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n;
}

std::uint64_t resident_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// Bytes malloc has handed out and not had back: a leak grows it, fragmentation does not.
std::uint64_t heap_in_use() {
  const struct mallinfo2 m = ::mallinfo2();
  return m.uordblks + m.hblkhd;
}

// The median of v[first, last).
std::uint64_t median(const std::vector<std::uint64_t>& v, std::size_t first, std::size_t last) {
  std::vector<std::uint64_t> part(v.begin() + static_cast<std::ptrdiff_t>(first),
                                  v.begin() + static_cast<std::ptrdiff_t>(last));
  if (part.empty()) return 0;
  std::nth_element(part.begin(), part.begin() + static_cast<std::ptrdiff_t>(part.size() / 2),
                   part.end());
  return part[part.size() / 2];
}

std::string_view kind_name(fault::kind k) {
  switch (k) {
    case fault::kind::status:
      return "status";
    case fault::kind::reset:
      return "reset";
    case fault::kind::stall:
      return "stall";
    case fault::kind::truncate:
      return "truncate";
    case fault::kind::corrupt:
      return "corrupt";
    case fault::kind::wrong_range:
      return "wrong_range";
    case fault::kind::throttle:
      return "throttle";
    case fault::kind::redirect:
      return "redirect";
    case fault::kind::delay:
      return "delay";
    case fault::kind::none:
      break;
  }
  return "none";
}

struct tally {
  std::atomic<std::uint64_t> requests{0}, exact{0}, bytes_verified{0}, wrong{0}, clean_errors{0},
      cuts{0}, unexpected{0};
};

TEST(Soak, MixedTrafficWithFaultsLeavesExactBytesAndNoLeaks) {
  const auto seconds = env_number("SOAK_SECONDS", 40);
  const auto clients = static_cast<int>(env_number("SOAK_CLIENTS", 12));
  const double rate = static_cast<double>(env_number("SOAK_FAULT_PERCENT", 25)) / 100.0;
  const auto max_requests = static_cast<std::uint64_t>(env_number("SOAK_MAX_REQUESTS", 200000));
  const std::uint64_t seed = static_cast<std::uint64_t>(env_number("SOAK_SEED", 20261129));

  const std::size_t fds_before = open_fds();
  tally t;
  std::map<fault::kind, std::uint64_t> applied;
  std::vector<std::uint64_t> rss, heap;  // one sample a second each
  std::uint64_t final_bytes = 0;
  {
    temp_dir dir;
    fault_upstream upstream;
    std::vector<std::string> blobs, digests;
    for (std::size_t i = 0; i < 12; ++i) {
      blobs.push_back(random_bytes(3 * MiB + i * MiB / 2 + i * 4099, seed + i));
      digests.push_back(upstream.add_blob(blobs.back()));
    }
    // 69 MiB of blobs in a 64 MiB store (the smallest allowed): eviction runs all the time.
    layercache_instance proxy(
        "cache:\n  path: " + (dir.path() / "store").string() +
        "\n  chunk_size: 256KiB\n  fetch_size: 1MiB\n  capacity: 64MiB\n"
        "  memory_cache: 8MiB\n  block_cache: 8MiB\n"
        "prefetch: {eager_layers: never, fetch_published: false}\n"
        "log: {level: error, access: false}\nupstreams:\n" +
        upstream_yaml("up", upstream.url(), true,
                      "    timeouts: {connect: 2s, response: 1s, read: 1s}\n"
                      "    retry: {attempts: 3, backoff: 20ms, max_backoff: 100ms, "
                      "max_retry_after: 2s}\n"));
    upstream.randomize(rate,
                       {fault::kind::reset, fault::kind::stall, fault::kind::truncate,
                        fault::kind::status, fault::kind::wrong_range, fault::kind::throttle},
                       seed);

    const auto start = clock::now();
    const auto deadline = start + std::chrono::seconds(seconds);
    std::atomic<bool> done{false};
    std::thread sampler([&] {
      while (!done) {
        rss.push_back(resident_bytes());
        heap.push_back(heap_in_use());
        for (int i = 0; i < 10 && !done; ++i) std::this_thread::sleep_for(100ms);
      }
    });
    std::mutex report_mutex;
    std::string first_wrong;
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        std::mt19937_64 random(seed * 31 + static_cast<std::uint64_t>(c));
        http_client client;
        while (clock::now() < deadline && t.requests.fetch_add(1) < max_requests) {
          const std::size_t b = random() % blobs.size();
          const std::string& data = blobs[b];
          const std::string url = proxy.url() + "/v2/soak/app/blobs/" + digests[b];
          const unsigned op = random() % 10;
          std::uint64_t first = 0, last = data.size() - 1;
          header_list headers;
          if (op >= 4) {  // a random range, 1 B to 1 MiB
            first = random() % data.size();
            last = std::min<std::uint64_t>(data.size() - 1, first + random() % MiB);
            headers.emplace_back("Range",
                                 "bytes=" + std::to_string(first) + "-" + std::to_string(last));
          }
          try {
            const auto r = op == 0 ? client.head(url) : client.get(url, headers);
            if (r.status == 502 || r.status == 504) {
              ++t.clean_errors;
              continue;
            }
            const unsigned expected = op >= 4 ? 206 : 200;
            if (r.status != expected) {
              ++t.unexpected;
              std::lock_guard lock(report_mutex);
              if (first_wrong.empty()) first_wrong = "status " + std::to_string(r.status);
              continue;
            }
            if (op == 0) {
              ++t.exact;
              continue;
            }
            const std::string_view want = std::string_view(data).substr(first, last - first + 1);
            if (r.body.size() < want.size() && want.starts_with(r.body)) {
              ++t.cuts;  // cut short, but every byte that came was right
            } else if (r.body != want) {
              ++t.wrong;
              std::lock_guard lock(report_mutex);
              if (first_wrong.empty()) {
                first_wrong = "blob " + std::to_string(b) + " bytes " + std::to_string(first) +
                              "-" + std::to_string(last);
              }
            } else {
              ++t.exact;
              t.bytes_verified += want.size();
            }
          } catch (const std::exception&) {
            ++t.cuts;  // the connection closed early (our client keeps no partial body)
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    done = true;
    sampler.join();
    applied = upstream.applied();
    EXPECT_TRUE(first_wrong.empty()) << "first wrong answer: " << first_wrong;

    // Faults off: the store holds nothing wrong.
    upstream.randomize(0, {}, 0);
    http_client client;
    for (int round = 0; round < 2; ++round) {
      for (std::size_t b = 0; b < blobs.size(); ++b) {
        const auto r = client.get(proxy.url() + "/v2/soak/app/blobs/" + digests[b]);
        EXPECT_EQ(r.status, 200u);
        EXPECT_TRUE(r.body == blobs[b]) << "blob " << b << " differs after the soak";
        final_bytes += r.body.size();
      }
    }
    const auto health =
        client.get("http://127.0.0.1:" + std::to_string(proxy.srv().admin_port()) + "/healthz");
    EXPECT_EQ(health.status, 200u);
  }
  const std::size_t fds_after = open_fds();

  EXPECT_EQ(t.wrong.load(), 0u);
  EXPECT_EQ(t.unexpected.load(), 0u);
  EXPECT_GT(t.exact.load(), 0u);
  EXPECT_EQ(fds_after, fds_before) << "descriptors leaked";
  // Medians of the first and last thirds: the 12 clients each hold a body of up to 8.5 MiB
  // while they compare it, which moves any one sample by tens of MiB.
  const std::size_t n = rss.size(), third = n / 3;
  const std::uint64_t early = median(rss, 0, third), late = median(rss, n - third, n);
  const std::uint64_t heap_early = median(heap, 0, third), heap_late = median(heap, n - third, n);
  // Caches are bounded (8 + 8 MiB, fills by fetch_size): what is held must not grow with time.
  if (third > 0) {
    EXPECT_LE(heap_late, heap_early + 48 * MiB) << "heap in use grew";
  }

  // Resident / heap in use at each tenth of the run, to tell a plateau from a leak.
  std::string trail;
  for (std::size_t k = 1; k <= 10 && n > 0; ++k) {
    const std::size_t i = std::min(n - 1, n * k / 10);
    trail +=
        (k > 1 ? " " : "") + std::to_string(rss[i] / MiB) + "/" + std::to_string(heap[i] / MiB);
  }
  std::uint64_t faults = 0;
  std::string by_kind;
  boost::json::object kinds;
  for (const auto& [k, n] : applied) {
    faults += n;
    by_kind += std::string(kind_name(k)) + " " + std::to_string(n) + ", ";
    kinds[kind_name(k)] = n;
  }
  std::cout << "soak: " << seconds << " s, " << clients << " clients, fault rate " << rate
            << "\n| requests | exact | bytes verified | wrong bytes | clean 502/504 | cut short |"
               " faults injected | RSS early→late | heap early→late | fds before/after |\n"
            << "| " << t.requests.load() << " | " << t.exact.load() << " | "
            << t.bytes_verified.load() + final_bytes << " | " << t.wrong.load() << " | "
            << t.clean_errors.load() << " | " << t.cuts.load() << " | " << faults << " (" << by_kind
            << ") | " << early / MiB << "→" << late / MiB << " MiB | " << heap_early / MiB << "→"
            << heap_late / MiB << " MiB | " << fds_before << "/" << fds_after
            << " |\nresident/heap MiB at each tenth: " << trail << "\n";
  if (const char* path = std::getenv("SOAK_REPORT"); path != nullptr && *path != '\0') {
    boost::json::object o{
        {"seconds", seconds},       {"clients", clients},
        {"fault_rate", rate},       {"requests", t.requests.load()},
        {"exact", t.exact.load()},  {"bytes_verified", t.bytes_verified.load() + final_bytes},
        {"wrong", t.wrong.load()},  {"clean_errors", t.clean_errors.load()},
        {"cuts", t.cuts.load()},    {"faults", faults},
        {"faults_by_kind", kinds},  {"rss_early", early},
        {"rss_late", late},         {"heap_early", heap_early},
        {"heap_late", heap_late},   {"rss_heap_trail_mib", trail},
        {"fds_before", fds_before}, {"fds_after", fds_after}};
    std::ofstream(path) << boost::json::serialize(o) << "\n";
  }
}

}  // namespace
}  // namespace layercache::testing
