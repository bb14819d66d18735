// What writing chunk bytes costs RocksDB, two ways (docs/architecture.md "Next steps", the
// cold path's CPU): as the store writes them now — each 1 MiB chunk a Put into a 32 MiB
// memtable (no WAL), flushed and compacted by the LSM — and as the redesign would — each run
// of 8 chunks of one blob written as a table file of its own (SstFileWriter) and ingested
// (IngestExternalFile, the file moved in). The column family's options are the chunk
// family's (cache/rocksdb_backend.cpp); the blobs' chunks are interleaved as a pull of
// several layers at once writes them. Reported: the process's CPU seconds (RocksDB's
// background threads included) and wall time until no flush or compaction is left, the files
// per level then, and the CPU still owed: compacting what level 0 holds into the last level.
//
//   layercache-ingest-bench [MiB per blob (64)] [blobs (4)] [rounds (3)]
//
// Not a test and not part of any suite: numbers for docs/benchmarks.md.
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/records.hpp"
#include "cache/rocksdb_options.hpp"
#include "oci/digest.hpp"
#include "tests/support/process.hpp"

namespace {

constexpr std::size_t chunk_size = 1 << 20;
constexpr std::size_t run_chunks = 8;  // cache.fetch_size / cache.chunk_size by default

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  const auto sec = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

// The store's own chunk family (cache/rocksdb_options.hpp), in a database of its own.
rocksdb::Options chunk_options() {
  rocksdb::Options o(rocksdb::DBOptions(),
                     layercache::cache::detail::chunk_family(rocksdb::NewLRUCache(256 << 20),
                                                             layercache::cache::chunk_layout::sst));
  o.create_if_missing = true;
  o.max_background_jobs = 4;
  o.bytes_per_sync = 1 << 20;
  return o;
}

// Chunk `index` of bench blob `blob`: the store's own key (cache/records.hpp) of a digest.
std::string key_of(std::uint64_t blob, std::uint32_t index) {
  const auto d = layercache::oci::digest_of("ingest bench blob " + std::to_string(blob));
  return layercache::cache::detail::chunk_key(d.raw(), index);
}

std::unique_ptr<rocksdb::DB> open_db(const std::filesystem::path& dir,
                                     const rocksdb::Options& options) {
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(options, dir.string(), &raw).ok()) throw std::runtime_error("open");
  return std::unique_ptr<rocksdb::DB>(raw);
}

// Waits (at most 10 minutes) until no memtable is left to flush and no compaction runs.
void settle(rocksdb::DB& db) {
  (void)db.Flush(rocksdb::FlushOptions());
  for (int i = 0; i < 60000; ++i) {
    std::uint64_t pending = 0;
    std::uint64_t running = 0;
    std::uint64_t flushes = 0;
    db.GetIntProperty("rocksdb.compaction-pending", &pending);
    db.GetIntProperty("rocksdb.num-running-compactions", &running);
    db.GetIntProperty("rocksdb.num-running-flushes", &flushes);
    if (pending == 0 && running == 0 && flushes == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string levels(rocksdb::DB& db) {
  std::string out;
  for (int level = 0; level < 7; ++level) {
    std::string n;
    if (db.GetProperty("rocksdb.num-files-at-level" + std::to_string(level), &n) && n != "0") {
      out += " L" + std::to_string(level) + "=" + n;
    }
  }
  return out;
}

struct result {
  double cpu = 0;
  double wall = 0;
  double put_wall = 0;  // until the last chunk was handed over
  // The CPU of compacting what was left in level 0 into the last level (RocksDB compacts
  // level 0 only from 4 files: whether a run ended with it done or still owed varies).
  double owed_cpu = 0;
  std::string files;
};

// What writing took, once the database has settled: from `t0` (wall) and `cpu0` (CPU s).
result settled(rocksdb::DB& db, std::chrono::steady_clock::time_point t0, double cpu0) {
  const auto handed_over = std::chrono::steady_clock::now();
  settle(db);
  result r;
  r.cpu = cpu_seconds() - cpu0;
  r.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.put_wall = std::chrono::duration<double>(handed_over - t0).count();
  r.files = levels(db);
  const double before = cpu_seconds();
  (void)db.CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr);
  settle(db);
  r.owed_cpu = cpu_seconds() - before;
  return r;
}

// The chunks of `blobs` blobs, interleaved by run as parallel fills deliver them.
template <typename Write>
void each_run(std::size_t blobs, std::size_t chunks, Write write) {
  for (std::size_t first = 0; first < chunks; first += run_chunks) {
    for (std::uint64_t b = 0; b < blobs; ++b) write(b, first, std::min(chunks, first + run_chunks));
  }
}

result with_memtable(const std::filesystem::path& dir, const std::string& bytes,
                     std::size_t blobs) {
  const auto db = open_db(dir, chunk_options());
  rocksdb::WriteOptions w;
  w.disableWAL = true;
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = cpu_seconds();
  each_run(blobs, bytes.size() / chunk_size,
           [&](std::uint64_t b, std::size_t from, std::size_t to) {
             for (std::size_t i = from; i < to; ++i) {
               const rocksdb::Slice value(bytes.data() + i * chunk_size, chunk_size);
               if (!db->Put(w, key_of(b, static_cast<std::uint32_t>(i)), value).ok())
                 throw std::runtime_error("put");
             }
           });
  return settled(*db, t0, c0);
}

result with_ingestion(const std::filesystem::path& dir, const std::string& bytes,
                      std::size_t blobs) {
  const auto options = chunk_options();
  const auto db = open_db(dir, options);
  rocksdb::IngestExternalFileOptions ingest;
  ingest.move_files = true;
  const auto staging = dir / "staging";
  std::filesystem::create_directories(staging);
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = cpu_seconds();
  std::uint64_t n = 0;
  each_run(blobs, bytes.size() / chunk_size,
           [&](std::uint64_t b, std::size_t from, std::size_t to) {
             rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), options);
             const auto file = (staging / (std::to_string(n++) + ".sst")).string();
             if (!writer.Open(file).ok()) throw std::runtime_error("sst open");
             for (std::size_t i = from; i < to; ++i) {
               const rocksdb::Slice value(bytes.data() + i * chunk_size, chunk_size);
               if (!writer.Put(key_of(b, static_cast<std::uint32_t>(i)), value).ok())
                 throw std::runtime_error("sst put");
             }
             if (!writer.Finish().ok()) throw std::runtime_error("sst finish");
             if (!db->IngestExternalFile({file}, ingest).ok()) throw std::runtime_error("ingest");
           });
  return settled(*db, t0, c0);
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t mib = argc > 1 ? std::stoul(argv[1]) : 64;
  const std::size_t blobs = argc > 2 ? std::stoul(argv[2]) : 4;
  const int rounds = argc > 3 ? std::stoi(argv[3]) : 3;
  std::string bytes(mib << 20, '\0');
  std::mt19937_64 rng(42);
  for (std::size_t i = 0; i + 8 <= bytes.size(); i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(bytes.data() + i, &v, 8);
  }
  std::printf("%zu blobs of %zu MiB, 1 MiB chunks, runs of %zu; CPU s and wall s until settled\n",
              blobs, mib, run_chunks);
  for (int round = 0; round < rounds; ++round) {
    for (const bool ingest : {false, true}) {
      layercache::testing::temp_dir dir;
      const auto r = ingest ? with_ingestion(dir.path() / "db", bytes, blobs)
                            : with_memtable(dir.path() / "db", bytes, blobs);
      std::printf(
          "%-9s round %d: cpu %.3f s + %.3f s owed, wall %.3f s (writes handed over in %.3f s), "
          "files%s\n",
          ingest ? "ingested" : "memtable", round + 1, r.cpu, r.owed_cpu, r.wall, r.put_wall,
          r.files.c_str());
      std::fflush(stdout);
    }
  }
}
