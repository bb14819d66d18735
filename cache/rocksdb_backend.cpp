#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/experimental.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#if defined(__SANITIZE_THREAD__)
// libtsan's, not in its installed headers: TSan ignores the calling thread's memory accesses
// (not its synchronization) between the two.
extern "C" void __tsan_ignore_thread_begin();  // NOLINT(bugprone-reserved-identifier)
extern "C" void __tsan_ignore_thread_end();    // NOLINT(bugprone-reserved-identifier)
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "cache/backend.hpp"
#include "cache/rocksdb_logger.hpp"
#include "cache/rocksdb_options.hpp"

namespace layercache::cache::detail {
namespace {

// Column families. Blob records live in the chunks family, under record_prefix: a chunk and
// its record must survive a crash together, and a family's flushes are a consistent cut of
// its own writes (oldest memtable first), so no flush across families has to be atomic.
// (atomic_flush across families, as before, can hang Close() after a failed flush in RocksDB
// 7.8: facebook/rocksdb#11867, #11872.) The database also has RocksDB's "default".
enum class column : std::uint8_t { chunks, manifests, tags, meta };
constexpr std::size_t column_count = 4;
constexpr std::array<const char*, column_count> column_names = {"chunks", "manifests", "tags",
                                                                "meta"};
// Where records were before: moved into the chunks family at open, then dropped.
constexpr const char* legacy_blobs_column = "blobs";

// Chunk keys are a raw digest (32 or 64 bytes) + 4, records record_prefix + a raw digest (40
// or 72): the lengths never meet, and a chunk key would fall among the records only for a
// digest starting with 64 zero bits. Records sort first; loading them reads only their blocks.
constexpr std::string_view record_prefix{"\0\0\0\0\0\0\0\0", 8};

constexpr column column_of(family f) {
  switch (f) {
    case family::chunks:
    case family::blobs:
      return column::chunks;
    case family::manifests:
      return column::manifests;
    case family::tags:
      return column::tags;
    case family::meta:
      return column::meta;
  }
  return column::meta;
}

constexpr std::string_view prefix_of(family f) {
  return f == family::blobs ? record_prefix : std::string_view{};
}

// Whether `key`, found under a family's prefix, belongs to that family: a chunk key of a digest
// starting with record_prefix is not a record (see above).
bool in_family(family f, std::string_view key) {
  return f != family::blobs || (key.size() != 32 + 4 && key.size() != 64 + 4);
}

rocksdb::Slice slice(std::string_view s) { return {s.data(), s.size()}; }

status from_rocksdb(const rocksdb::Status& s, std::string_view what) {
  std::string message = std::string(what) + ": " + s.ToString();
  if (s.ok()) return status::success();
  if (s.IsNotFound()) return status::not_found(std::move(message));
  if (s.IsCorruption()) return status::corruption(std::move(message));
  if (s.IsNoSpace()) return status::no_space(std::move(message));
  return status::io_error(std::move(message));
}

// Write batches are recycled. A chunk's batch holds a whole chunk; a fresh one per write is a
// fresh allocation of that size, whose pages the kernel faults in and zeroes, and the bytes
// are copied twice as the batch grows (docs/benchmarks.md, 2026-11-29). A cleared batch keeps
// its capacity.
class batch_pool {
 public:
  std::unique_ptr<rocksdb::WriteBatch> take() {
    {
      std::lock_guard lock(mu_);
      if (!free_.empty()) {
        auto b = std::move(free_.back());
        free_.pop_back();
        return b;
      }
    }
    return std::make_unique<rocksdb::WriteBatch>();
  }
  void give(std::unique_ptr<rocksdb::WriteBatch> b) {
    // Kept: a few, of at most a few chunks each (chunks may be up to 16 MiB).
    if (b->GetDataSize() > max_kept_bytes) return;
    b->Clear();
    std::lock_guard lock(mu_);
    if (free_.size() < max_kept) free_.push_back(std::move(b));
  }

 private:
  static constexpr std::size_t max_kept = 4;
  static constexpr std::size_t max_kept_bytes = 4 << 20;
  std::mutex mu_;
  std::vector<std::unique_ptr<rocksdb::WriteBatch>> free_;
};

class rocksdb_batch final : public write_batch {
 public:
  rocksdb_batch(const std::vector<rocksdb::ColumnFamilyHandle*>& columns, batch_pool& pool)
      : columns_(columns), pool_(pool), owned_(pool.take()), batch_(*owned_) {}
  ~rocksdb_batch() override { pool_.give(std::move(owned_)); }
  rocksdb_batch(const rocksdb_batch&) = delete;
  rocksdb_batch& operator=(const rocksdb_batch&) = delete;

  void put(family f, std::string_view key, std::string_view head, std::string_view tail) override {
    const std::array<rocksdb::Slice, 2> k = {slice(prefix_of(f)), slice(key)};
    const std::array<rocksdb::Slice, 2> parts = {slice(head), slice(tail)};
    check(batch_.Put(cf(f), rocksdb::SliceParts(k.data(), 2),
                     rocksdb::SliceParts(parts.data(), tail.empty() ? 1 : 2)));
  }
  void erase(family f, std::string_view key) override {
    const std::array<rocksdb::Slice, 2> k = {slice(prefix_of(f)), slice(key)};
    check(batch_.Delete(cf(f), rocksdb::SliceParts(k.data(), 2)));
  }
  void erase_range(family f, std::string_view begin, std::string_view end) override {
    const std::string b = std::string(prefix_of(f)).append(begin);
    const std::string e = std::string(prefix_of(f)).append(end);
    check(batch_.DeleteRange(cf(f), slice(b), slice(e)));
  }

  const std::vector<rocksdb::ColumnFamilyHandle*>& columns_;
  batch_pool& pool_;
  std::unique_ptr<rocksdb::WriteBatch> owned_;

 public:
  rocksdb::WriteBatch& batch_;
  rocksdb::Status error_;  // the first failure to build the batch (e.g. an oversized value)

 private:
  rocksdb::ColumnFamilyHandle* cf(family f) const {
    return columns_[static_cast<std::size_t>(column_of(f))];
  }
  void check(rocksdb::Status s) {
    if (error_.ok()) {
      error_ = std::move(s);
    } else {
      s.PermitUncheckedError();
    }
  }
};

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer builds only (scripts/sanitize.sh). Debian's librocksdb is not instrumented:
// TSan sees the memory its flushes and compactions touch through intercepted functions, but
// never the std::atomic operations that order those accesses. tests/tsan.supp drops the
// reports with a librocksdb frame; a flush copying a memtable key with std::string::append
// (libstdc++ calls memcpy) has none, and was reported racing with the Put that wrote the key
// (CI, max_disk_test, 2026-12-07). So RocksDB's background jobs run with TSan ignoring their
// memory accesses, not their locks. Of ours, only error_listener (one atomic store) and the
// mutex-guarded LOG writer run in them; everything layercache's own threads do stays checked.
class tsan_quiet_env final : public rocksdb::EnvWrapper {
 public:
  explicit tsan_quiet_env(rocksdb::Env* base) : rocksdb::EnvWrapper(base) {}
  const char* Name() const override { return "layercache-tsan-quiet"; }
  void Schedule(void (*run)(void*), void* arg, Priority pri, void* tag,
                void (*unschedule)(void*)) override {
    auto* job = new quiet_job{run, arg, unschedule};
    target()->Schedule(&run_quietly, job, pri, tag, &dropped);
  }

 private:
  struct quiet_job {
    void (*run)(void*);
    void* arg;
    void (*unschedule)(void*);
  };
  static void run_quietly(void* p) {
    const std::unique_ptr<quiet_job> job(static_cast<quiet_job*>(p));
    __tsan_ignore_thread_begin();
    job->run(job->arg);
    __tsan_ignore_thread_end();
  }
  static void dropped(void* p) {  // UnSchedule: RocksDB's own clean-up, if it gave one
    const std::unique_ptr<quiet_job> job(static_cast<quiet_job*>(p));
    if (job->unschedule != nullptr) job->unschedule(job->arg);
  }
};

rocksdb::Env* rocksdb_env() {
  static tsan_quiet_env env(rocksdb::Env::Default());  // process-wide, as Env::Default()
  return &env;
}
#else
rocksdb::Env* rocksdb_env() { return rocksdb::Env::Default(); }
#endif

// Takes RocksDB's automatic recovery from background errors away: it runs flushes on its own
// threads that race Close() (facebook/rocksdb#11440, #11867) and writes again into a disk that
// just failed (in Debian's build, with assertions on, a writer used after an error aborts the
// process). The backend stops writing instead and resumes itself once there is room
// (rocksdb_backend::resume_if_room).
class error_listener final : public rocksdb::EventListener {
 public:
  explicit error_listener(std::atomic<bool>& stopped) : stopped_(stopped) {}
  void OnBackgroundError(rocksdb::BackgroundErrorReason /*reason*/,
                         rocksdb::Status* error) override {
    if (error != nullptr && !error->ok()) stopped_.store(true);
  }
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status error,
                            bool* auto_recovery) override {
    error.PermitUncheckedError();
    if (auto_recovery != nullptr) *auto_recovery = false;
  }

 private:
  std::atomic<bool>& stopped_;
};

rocksdb::ColumnFamilyOptions base_family(const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions o;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.checksum = rocksdb::kXXH3;
  table.format_version = 5;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  o.level_compaction_dynamic_level_bytes = true;
  return o;
}

class rocksdb_backend final : public backend {
 public:
  explicit rocksdb_backend(const store_options& options) {
    std::error_code ec;
    std::filesystem::create_directories(options.path, ec);
    if (ec) {
      throw std::runtime_error("cannot create the cache directory " + options.path + ": " +
                               ec.message());
    }
    auto cache = rocksdb::NewLRUCache(options.block_cache);
    block_cache_ = cache;
    chunk_blocks_ = rocksdb::NewLRUCache(chunk_blocks_bytes, chunk_blocks_shard_bits);
    path_ = options.path;
    open(options);
    // Without sync_writes, nothing goes through the write-ahead log. Writing every chunk there
    // cost a quarter of layercached's CPU in a cold pull (Debian's RocksDB checksums log
    // records in software) and wrote every byte to disk once more. A crash loses the writes
    // since the chunks family's last flush, never half of one: a chunk and its record are in
    // one family, whose flushes keep its writes' order (see record_prefix). persist() asks
    // for a flush where losing writes would cost most (a blob just verified whole).
    write_options_.disableWAL = !options.sync_writes;
    write_options_.sync = options.sync_writes;
  }

  ~rocksdb_backend() override {
    // A running compact() ends at its next step (Status::Incomplete); nothing is lost.
    db_->DisableManualCompaction();
    if (compactor_.joinable()) compactor_.join();
    // Writes that bypassed the WAL live only in memtables: flush them — unless writing has
    // stopped after an error (the disk is full): what was flushed before is consistent.
    if (write_options_.disableWAL && !stopped_.load()) {
      rocksdb::FlushOptions fo;
      fo.wait = true;
      fo.allow_write_stall = true;
      db_->Flush(fo, columns_).PermitUncheckedError();
    }
    for (auto* h : columns_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db_->DestroyColumnFamilyHandle(default_).PermitUncheckedError();
    // A failure to close leaves nothing to do: what was flushed is consistent.
    db_->Close().PermitUncheckedError();
  }

  rocksdb_backend(const rocksdb_backend&) = delete;
  rocksdb_backend& operator=(const rocksdb_backend&) = delete;

  std::optional<std::uint64_t> free_disk() override {
    struct statvfs st {};
    if (::statvfs(path_.c_str(), &st) != 0) return std::nullopt;
    return std::uint64_t{st.f_bavail} * st.f_frsize;
  }

  std::optional<std::uint64_t> disk_bytes() override {
    std::uint64_t bytes = 0;
    std::error_code ec;
    // RocksDB's files are all directly under path_ (tables, blob files, MANIFEST, LOG).
    for (const auto& entry : std::filesystem::directory_iterator(path_, ec)) {
      struct stat st {};
      if (::lstat(entry.path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        bytes += std::uint64_t{static_cast<std::uint64_t>(st.st_blocks)} * 512;
      }
    }
    if (ec) return std::nullopt;
    return bytes;
  }

  bool compact() override {
    if (stopped_.load() || compacting_.exchange(true)) return false;
    if (compactor_.joinable()) compactor_.join();  // the last one, finished
    compactor_ = std::thread([this] {
      rocksdb::CompactRangeOptions o;
      o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
      // Blob files are rewritten with only their live chunks, whatever their age.
      o.blob_garbage_collection_policy = rocksdb::BlobGarbageCollectionPolicy::kForce;
      o.blob_garbage_collection_age_cutoff = 1.0;
      for (auto* h : columns_) {
        // A failure (no space, or the destructor's cancel) leaves the files as they were.
        if (!db_->CompactRange(o, h, nullptr, nullptr).ok()) break;
      }
      compacting_.store(false);
    });
    return true;
  }

  bool compacting() override { return compacting_.load(); }

  std::uint64_t block_cache_bytes() override { return block_cache_->GetUsage(); }

  std::uint64_t write_buffer_bytes() override {
    std::uint64_t bytes = 0;  // mutable and immutable memtables of every family
    if (!db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kSizeAllMemTables, &bytes)) {
      return 0;
    }
    return bytes;
  }

  bool writes_stopped() override { return stopped_.load(); }

  void persist() override {
    // The WAL already has every write; a stopped database takes no flush.
    if (!write_options_.disableWAL || stopped_.load()) return;
    rocksdb::FlushOptions fo;
    fo.wait = false;
    fo.allow_write_stall = true;
    // A failed flush is retried by the next one; the data stays in memory meanwhile.
    db_->Flush(fo, columns_).PermitUncheckedError();
  }

  std::unique_ptr<write_batch> make_batch() override {
    return std::make_unique<rocksdb_batch>(columns_, batches_);
  }

  status write(write_batch& batch) override {
    auto& b = static_cast<rocksdb_batch&>(batch);
    if (!b.error_.ok()) return from_rocksdb(b.error_, "building a write batch");
    if (stopped_.load()) {
      if (status s = resume_if_room(); !s.ok()) return s;
    }
    rocksdb::Status s = db_->Write(write_options_, &b.batch_);
    // Nothing more goes to a disk that just failed a write, not even a flush (the listener
    // stops the background errors the same way).
    if (s.IsNoSpace() || s.IsIOError()) stopped_.store(true);
    return from_rocksdb(s, "write");
  }

  status read(family f, std::string_view key,
              const std::function<void(std::string_view)>& on_value) override {
    rocksdb::PinnableSlice value;
    std::string storage;
    rocksdb::Status s =
        db_->Get(rocksdb::ReadOptions(), cf(f), physical_slice(f, key, storage), &value);
    if (!s.ok()) return from_rocksdb(s, "read");
    on_value(std::string_view(value.data(), value.size()));
    return status::success();
  }

  status read_shared(family f, std::string_view key, std::shared_ptr<const void>& owner,
                     std::string_view& value) override {
    // The value stays where RocksDB read it (the block in the block cache, pinned); the cache
    // is kept alive with it, so a chunk may outlive the database that read it.
    struct pinned {
      std::shared_ptr<rocksdb::Cache> cache;
      rocksdb::PinnableSlice slice;  // released before `cache`
    };
    auto p = std::make_shared<pinned>();
    p->cache = column_of(f) == column::chunks ? chunk_blocks_ : block_cache_;
    rocksdb::ReadOptions ro;
    ro.verify_checksums = false;  // the value's own CRC-32C is checked by the caller
    std::string storage;
    rocksdb::Status s = db_->Get(ro, cf(f), physical_slice(f, key, storage), &p->slice);
    if (!s.ok()) return from_rocksdb(s, "read");
    value = std::string_view(p->slice.data(), p->slice.size());
    owner = std::move(p);
    return status::success();
  }

  status scan(family f, std::string_view prefix, scan_mode mode,
              const std::function<bool(std::string_view, std::string_view)>& on_entry) override {
    const bool keys_only = mode != scan_mode::entries;
    rocksdb::ReadOptions ro;
    ro.fill_cache = !keys_only;
    ro.verify_checksums = mode != scan_mode::keys_unchecked;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf(f)));
    const std::string start = physical_key(f, prefix);
    const std::size_t strip = prefix_of(f).size();
    for (it->Seek(slice(start)); it->Valid(); it->Next()) {
      const rocksdb::Slice k = it->key();
      const std::string_view key(k.data(), k.size());
      if (!key.starts_with(start)) break;
      if (!in_family(f, key)) continue;
      std::string_view value;
      if (!keys_only) value = std::string_view(it->value().data(), it->value().size());
      if (!on_entry(key.substr(strip), value)) break;
    }
    return from_rocksdb(it->status(), "scan");
  }

  void reclaim(family f, std::string_view begin, std::string_view end) override {
    const std::string pb = physical_key(f, begin);
    const std::string pe = physical_key(f, end);
    const rocksdb::Slice b = slice(pb);
    const rocksdb::Slice e = slice(pe);
    // Only a hint: marks the files holding the range for compaction. Failing it costs disk
    // space until a later compaction, nothing else.
    rocksdb::experimental::SuggestCompactRange(db_.get(), cf(f), &b, &e).PermitUncheckedError();
  }

 private:
  rocksdb::ColumnFamilyHandle* cf(family f) const {
    return columns_[static_cast<std::size_t>(column_of(f))];
  }
  static std::string physical_key(family f, std::string_view key) {
    return std::string(prefix_of(f)).append(key);
  }
  // The same without a copy for a family stored as it is (chunk reads, the hot path); a
  // prefixed key is built in `storage`.
  static rocksdb::Slice physical_slice(family f, std::string_view key, std::string& storage) {
    const std::string_view prefix = prefix_of(f);
    if (prefix.empty()) return slice(key);
    storage.assign(prefix).append(key);
    return slice(storage);
  }

  static rocksdb::DBOptions db_options(const std::string& path,
                                       const std::shared_ptr<rocksdb::EventListener>& listener) {
    rocksdb::DBOptions db;
    db.env = rocksdb_env();
    db.create_if_missing = true;
    db.create_missing_column_families = true;
    db.max_background_jobs = 4;
    db.bytes_per_sync = 1 << 20;
    // RocksDB's own LOG writer aborts on the line after a failed write (rocksdb_logger.hpp).
    db.info_log = make_rocksdb_logger(path, info_log_size);
    db.max_total_wal_size = 512 << 20;
    // No automatic recovery from background errors (error_listener): resume_if_room() decides.
    db.max_bgerror_resume_count = 0;
    db.listeners.push_back(listener);
    return db;
  }

  void open(const store_options& options) {
    const rocksdb::DBOptions db =
        db_options(options.path, std::make_shared<error_listener>(stopped_));
    std::vector<std::string> existing;
    // Fails for a database not created yet: nothing to migrate then.
    rocksdb::DB::ListColumnFamilies(db, options.path, &existing).PermitUncheckedError();
    const bool legacy =
        std::find(existing.begin(), existing.end(), legacy_blobs_column) != existing.end();
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, base_family(block_cache_));
    for (std::size_t i = 0; i < column_count; ++i) {
      descriptors.emplace_back(column_names[i], static_cast<column>(i) == column::chunks
                                                    ? chunk_family(chunk_blocks_, options.layout)
                                                    : base_family(block_cache_));
    }
    if (legacy) descriptors.emplace_back(legacy_blobs_column, base_family(block_cache_));
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(db, options.path, descriptors, &handles, &raw);
    if (!s.ok()) {
      throw std::runtime_error("cannot open the cache store at " + options.path + ": " +
                               s.ToString());
    }
    db_.reset(raw);
    default_ = handles[0];
    columns_.assign(handles.begin() + 1, handles.begin() + 1 + column_count);
    if (legacy) migrate_records(handles.back());
  }

  // A store written before records moved into the chunks family (atomic flushes kept the two
  // families consistent): its records are copied there, made durable, and the old family
  // dropped. A crash before the drop copies them again at the next open (nothing is written
  // in between).
  void migrate_records(rocksdb::ColumnFamilyHandle* legacy) {
    rocksdb::WriteBatch batch;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), legacy));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string key =
          physical_key(family::blobs, std::string_view(it->key().data(), it->key().size()));
      rocksdb::Status s = batch.Put(cf(family::chunks), key, it->value());
      if (!s.ok()) throw std::runtime_error("cannot move the blob records: " + s.ToString());
    }
    rocksdb::Status s = it->status();
    it.reset();
    if (s.ok()) s = db_->Write(rocksdb::WriteOptions(), &batch);
    if (s.ok()) s = db_->Flush(rocksdb::FlushOptions(), cf(family::chunks));
    if (s.ok()) s = db_->DropColumnFamily(legacy);
    db_->DestroyColumnFamilyHandle(legacy).PermitUncheckedError();
    if (!s.ok()) throw std::runtime_error("cannot move the blob records: " + s.ToString());
  }

  // A database stopped after a failed write (a full disk) takes writes again once the disk
  // has room for its memtables and some more: DB::Resume() flushes them and clears the
  // error. Tried at once when room is seen, then at most every resume_backoff while it fails.
  // Called from write(), which the store serializes; never concurrent with the destructor.
  status resume_if_room() {
    const auto now = std::chrono::steady_clock::now();
    const auto free = free_disk();
    const std::uint64_t needed = write_buffer_bytes() + resume_headroom;
    if (now < next_resume_ || (free && *free < needed)) {
      return status::no_space("the store stopped writing after a failed write (disk full?); " +
                              (free ? std::to_string(*free) + " bytes free" : std::string()));
    }
    rocksdb::Status s = db_->Resume();
    if (s.ok()) {
      stopped_.store(false);
      return status::success();
    }
    next_resume_ = now + resume_backoff;
    return from_rocksdb(s, "resuming writes after a failed write");
  }

  static constexpr std::uint64_t resume_headroom = 64 << 20;
  static constexpr std::size_t info_log_size = 16 << 20;  // LOG, then LOG.old
  static constexpr std::chrono::seconds resume_backoff{1};

  // The block cache (cache.block_cache) keeps what is small and read everywhere: index and
  // filter blocks, manifests, tags. Chunk blocks go to a small cache of their
  // own: the chunk store's memory cache decides which chunks stay in memory, and keeps
  // them by pinning their blocks here. Pinned blocks count against the cache that holds
  // them; in the shared block cache a full memory cache left no room for anything else, so
  // 128 + 128 MiB configured held 128 MiB of chunks. A chunk read must still go through a
  // cache: RocksDB hands out a pinned block only from one, and copies the value otherwise
  // (a 1 MiB copy per whole-chunk read; docs/benchmarks.md, 2026-11-29 night). Unpinned chunk
  // blocks here are evicted as new ones arrive (usage is above this capacity whenever the
  // memory cache is full; inserts still succeed, the capacity is not strict).
  static constexpr std::size_t chunk_blocks_bytes = 16 << 20;
  static constexpr int chunk_blocks_shard_bits = 4;

  std::shared_ptr<rocksdb::Cache> block_cache_;
  std::shared_ptr<rocksdb::Cache> chunk_blocks_;
  // Writes refused: a write or a background flush failed. Set by the listener: outlives db_.
  std::atomic<bool> stopped_{false};
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* default_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> columns_;  // indexed by column
  rocksdb::WriteOptions write_options_;
  batch_pool batches_;
  std::string path_;
  std::chrono::steady_clock::time_point next_resume_{};
  std::atomic<bool> compacting_{false};
  std::thread compactor_;  // compact()'s; started and joined by the store's writers, and here
};

}  // namespace

// Chunks are layer bytes, already compressed: never compress them again. `blocks` is the
// chunks' own block cache (rocksdb_backend's chunk_blocks_, above).
rocksdb::ColumnFamilyOptions chunk_family(const std::shared_ptr<rocksdb::Cache>& blocks,
                                          chunk_layout layout) {
  rocksdb::ColumnFamilyOptions o = base_family(blocks);
  o.compression = rocksdb::kNoCompression;
  o.bottommost_compression = rocksdb::kNoCompression;
  // Memtables are resident memory beyond the configured caches (a cold pull fills them as
  // fast as it receives): 32 MiB each; with 64 MiB compare.sh's herd peaked at 158-160 MiB
  // resident against 135, with no faster cold pulls and about the same write amplification
  // (docs/benchmarks.md).
  o.write_buffer_size = 32 << 20;
  o.max_write_buffer_number = 3;
  o.target_file_size_base = 256 << 20;
  o.max_bytes_for_level_base = 1 << 30;
  if (layout == chunk_layout::blob_files) {
    o.enable_blob_files = true;
    o.min_blob_size = 4096;  // a short last chunk stays inline
    o.blob_file_size = 256 << 20;
    o.blob_compression_type = rocksdb::kNoCompression;
    o.enable_blob_garbage_collection = true;  // reclaims evicted chunks' space
    o.blob_cache = blocks;
  }
  return o;
}

std::unique_ptr<backend> open_rocksdb_backend(const store_options& options) {
  return std::make_unique<rocksdb_backend>(options);
}

}  // namespace layercache::cache::detail
