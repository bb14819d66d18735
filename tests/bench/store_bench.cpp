// Chunk store throughput per RocksDB chunk layout (SST values vs BlobDB blob files).
//
//   layercache-store-bench [--benchmark_filter=...] [--benchmark_repetitions=N]
//
// Stores live in a temporary directory (under $TMPDIR), removed at exit. "Warm" means the data is
// in the OS page cache; the RocksDB block cache is sized by the second argument (256 MiB is the
// configured default). Throughput is reported as bytes_per_second and as a GB/s counter.
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "cache/chunk_store.hpp"
#include "cache/crc32c.hpp"
#include "tests/support/process.hpp"

namespace {

using namespace layercache;
using layercache::testing::temp_dir;

constexpr std::uint64_t MiB = 1 << 20;
constexpr std::uint64_t blob_size = 256 * MiB;

temp_dir& root() {
  static temp_dir dir;
  return dir;
}

// The bytes of the benchmark blob: pseudo-random, like compressed layer data.
const std::string& blob_bytes() {
  static const std::string bytes = [] {
    std::string out(blob_size, '\0');
    std::mt19937_64 rng(42);
    for (std::size_t i = 0; i < out.size(); i += 8) {
      const std::uint64_t v = rng();
      std::memcpy(out.data() + i, &v, 8);
    }
    return out;
  }();
  return bytes;
}

oci::digest digest_n(std::uint64_t n) { return oci::digest_of("bench blob " + std::to_string(n)); }

cache::chunk_layout layout_of(const benchmark::State& state) {
  return state.range(0) == 0 ? cache::chunk_layout::sst : cache::chunk_layout::blob_files;
}

std::unique_ptr<cache::chunk_store> open(cache::chunk_layout layout, std::uint64_t block_cache,
                                         const std::string& name) {
  return cache::open_rocksdb_store(cache::store_options{
      .path = (root().path() / name).string(),
      .capacity = 64ULL << 30,
      .block_cache = block_cache,
      .sync_writes = false,
      .layout = layout,
  });
}

// The blob's chunks 0, step, 2 × step, …: every chunk (step 1), or a blob held in part.
void put_blob(cache::chunk_store& store, const oci::digest& d, std::uint32_t chunk_size,
              benchmark::State& state, std::uint32_t step = 1) {
  const std::string& bytes = blob_bytes();
  const auto n = static_cast<std::uint32_t>(blob_size / chunk_size);
  for (std::uint32_t i = 0; i < n; i += step) {
    const std::string_view chunk(bytes.data() + std::size_t{i} * chunk_size, chunk_size);
    cache::status s = store.put_chunk(d, blob_size, chunk_size, i, chunk);
    if (!s.ok()) {
      state.SkipWithError(s.message.c_str());
      return;
    }
  }
}

void report(benchmark::State& state, std::uint64_t bytes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.counters["GB/s"] =
      benchmark::Counter(static_cast<double>(bytes) / 1e9, benchmark::Counter::kIsRate);
}

// A store holding one 256 MiB blob with `chunk_size` chunks and every other chunk of another,
// flushed to SSTs (reopened) and read once, shared by the read benchmarks of one configuration.
cache::chunk_store& read_store(benchmark::State& state, std::uint32_t chunk_size) {
  static std::map<std::tuple<int, std::int64_t, std::uint32_t>, std::unique_ptr<cache::chunk_store>>
      stores;
  const auto key = std::make_tuple(static_cast<int>(state.range(0)), state.range(1), chunk_size);
  auto& store = stores[key];
  if (!store) {
    const std::string name = "read-" + std::to_string(state.range(0)) + "-" +
                             std::to_string(state.range(1)) + "-" + std::to_string(chunk_size);
    const auto block_cache = static_cast<std::uint64_t>(state.range(1)) * MiB;
    store = open(layout_of(state), block_cache, name);
    put_blob(*store, digest_n(0), chunk_size, state);
    put_blob(*store, digest_n(1), chunk_size, state, 2);  // every other chunk: held in part
    store.reset();
    store = open(layout_of(state), block_cache, name);  // recovery flushes the memtables
    std::string out;
    for (std::uint32_t i = 0; i < blob_size / chunk_size; ++i) {
      (void)store->get_chunk(digest_n(0), i, out);
    }
  }
  return *store;
}

void bm_put_sequential(benchmark::State& state) {
  auto store = open(layout_of(state), static_cast<std::uint64_t>(state.range(1)) * MiB,
                    "put-" + std::to_string(state.range(0)));
  std::uint64_t n = 1;
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    const oci::digest d = digest_n(n++);
    put_blob(*store, d, MiB, state);
    bytes += blob_size;
    state.PauseTiming();
    (void)store->erase_blob(d);
    state.ResumeTiming();
  }
  report(state, bytes);
}

void bm_get_sequential_warm(benchmark::State& state) {
  cache::chunk_store& store = read_store(state, MiB);
  const oci::digest d = digest_n(0);
  std::string out;
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    for (std::uint32_t i = 0; i < blob_size / MiB; ++i) {
      cache::status s = store.get_chunk(d, i, out);
      if (!s.ok()) state.SkipWithError(s.message.c_str());
      bytes += out.size();
    }
  }
  report(state, bytes);
}

// Random reads of a blob stored in 64 KiB chunks (small lazy-pull ranges).
void bm_get_random_64k(benchmark::State& state) {
  constexpr std::uint32_t chunk_size = 64 * 1024;
  cache::chunk_store& store = read_store(state, chunk_size);
  const oci::digest d = digest_n(0);
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> index(0, blob_size / chunk_size - 1);
  std::string out;
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    cache::status s = store.get_chunk(d, index(rng), out);
    if (!s.ok()) state.SkipWithError(s.message.c_str());
    bytes += out.size();
  }
  report(state, bytes);
}

// Listing the present chunks of the warm 256-chunk blob: costs a read of each chunk's block.
void bm_present_chunks(benchmark::State& state) {
  cache::chunk_store& store = read_store(state, MiB);
  for (auto _ : state) {
    benchmark::DoNotOptimize(store.present_chunks(digest_n(0)));
  }
}

// The same for a blob held in part (128 of its 256 chunks, as a lazy pull leaves one): the
// record's presence, where a scan of its chunk keys read each chunk's block before.
void bm_present_chunks_partial(benchmark::State& state) {
  cache::chunk_store& store = read_store(state, MiB);
  for (auto _ : state) {
    benchmark::DoNotOptimize(store.present_chunks(digest_n(1)));
  }
}

// Bytes this process has had written to storage so far (/proc/self/io write_bytes, background
// RocksDB threads included; 0 when unreadable).
std::uint64_t storage_writes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  std::uint64_t value = 0;
  while (io >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return 0;
}

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

std::uint64_t disk_usage(const std::filesystem::path& dir) {
  std::uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  }
  return total;
}

// A cache in steady state: 64 MiB blobs stored one after another into a 1 GiB store, 3 GiB in
// all, so the store evicts for two thirds of them — every byte is written once, then deleted.
// What the layout costs beyond storing each byte once: `write_amp` (bytes written to storage,
// flushes and compactions included, per byte stored), `cpu_s_per_GiB` (this process's CPU,
// background threads included) and `space_amp` (files on disk at the end per byte the store
// holds).
void bm_put_churn(benchmark::State& state) {
  constexpr std::uint64_t capacity = 1ULL << 30;
  constexpr std::uint64_t blob = 64 * MiB;
  constexpr int blobs = 48;
  const std::string name = "churn-" + std::to_string(state.range(0));
  const std::filesystem::path path = root().path() / name;
  auto store = cache::open_rocksdb_store(cache::store_options{
      .path = path.string(),
      .capacity = capacity,
      .block_cache = 32 * MiB,
      .sync_writes = false,
      .layout = layout_of(state),
  });
  const std::string& bytes = blob_bytes();
  std::uint64_t written = 0;
  const std::uint64_t writes_before = storage_writes();
  const double cpu_before = cpu_seconds();
  for (auto _ : state) {
    for (int b = 0; b < blobs; ++b) {
      const oci::digest d = digest_n(1000 + static_cast<std::uint64_t>(b));
      for (std::uint32_t i = 0; i < blob / MiB; ++i) {
        const std::string_view chunk(bytes.data() + (std::size_t{i} + b % 4 * 64) * MiB, MiB);
        cache::status s = store->put_chunk(d, blob, MiB, i, chunk);
        if (!s.ok()) {
          state.SkipWithError(s.message.c_str());
          return;
        }
        written += MiB;
      }
      (void)store->mark_verified(d);
    }
  }
  const std::uint64_t held = store->used_bytes();
  store.reset();  // flushes what is still in memtables, as a running daemon eventually would
  const double cpu = cpu_seconds() - cpu_before;
  const std::uint64_t disk = storage_writes() - writes_before;
  report(state, written);
  state.counters["write_amp"] = static_cast<double>(disk) / static_cast<double>(written);
  state.counters["cpu_s_per_GiB"] = cpu / (static_cast<double>(written) / (1ULL << 30));
  state.counters["space_amp"] =
      static_cast<double>(disk_usage(path)) / static_cast<double>(std::max<std::uint64_t>(held, 1));
}

// The per-chunk checksum alone, on a 1 MiB chunk in the CPU cache.
void bm_crc32c(benchmark::State& state) {
  const std::string_view chunk(blob_bytes().data(), MiB);
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(cache::detail::crc32c(chunk));
    bytes += chunk.size();
  }
  report(state, bytes);
}

void layouts(benchmark::internal::Benchmark* b) {
  b->ArgNames({"blobdb", "cache_mib"});
  for (int layout : {0, 1}) {
    for (int cache_mib : {256, 1024}) b->Args({layout, cache_mib});
  }
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(bm_present_chunks)->Apply(layouts)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_present_chunks_partial)->Apply(layouts)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_crc32c)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_put_sequential)->Apply(layouts)->MinTime(3.0);
BENCHMARK(bm_put_churn)
    ->ArgName("blobdb")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(bm_get_sequential_warm)->Apply(layouts)->MinTime(2.0);
BENCHMARK(bm_get_random_64k)->Apply(layouts)->MinTime(2.0)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
