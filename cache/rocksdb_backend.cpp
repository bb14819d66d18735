#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/experimental.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sys/statvfs.h>

#include <array>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "cache/backend.hpp"

namespace layercache::cache::detail {
namespace {

// Column family names, indexed by `family`; the database also has RocksDB's "default".
constexpr std::array<const char*, family_count> family_names = {"chunks", "blobs", "manifests",
                                                                "tags", "meta"};

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
// are copied twice as the batch grows (measured: 11% of layercached's CPU in a cold pull).
// A cleared batch keeps its capacity.
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
  rocksdb_batch(const std::vector<rocksdb::ColumnFamilyHandle*>& handles, batch_pool& pool)
      : handles_(handles), pool_(pool), owned_(pool.take()), batch_(*owned_) {}
  ~rocksdb_batch() override { pool_.give(std::move(owned_)); }
  rocksdb_batch(const rocksdb_batch&) = delete;
  rocksdb_batch& operator=(const rocksdb_batch&) = delete;

  void put(family f, std::string_view key, std::string_view head, std::string_view tail) override {
    const rocksdb::Slice k = slice(key);
    const std::array<rocksdb::Slice, 2> parts = {slice(head), slice(tail)};
    check(batch_.Put(cf(f), rocksdb::SliceParts(&k, 1),
                     rocksdb::SliceParts(parts.data(), tail.empty() ? 1 : 2)));
  }
  void erase(family f, std::string_view key) override { check(batch_.Delete(cf(f), slice(key))); }
  void erase_range(family f, std::string_view begin, std::string_view end) override {
    check(batch_.DeleteRange(cf(f), slice(begin), slice(end)));
  }

  const std::vector<rocksdb::ColumnFamilyHandle*>& handles_;
  batch_pool& pool_;
  std::unique_ptr<rocksdb::WriteBatch> owned_;

 public:
  rocksdb::WriteBatch& batch_;
  rocksdb::Status error_;  // the first failure to build the batch (e.g. an oversized value)

 private:
  rocksdb::ColumnFamilyHandle* cf(family f) const { return handles_[static_cast<std::size_t>(f)]; }
  void check(rocksdb::Status s) {
    if (error_.ok()) {
      error_ = std::move(s);
    } else {
      s.PermitUncheckedError();
    }
  }
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

// Chunks are layer bytes, already compressed: never compress them again. `blocks` is the
// chunks' own block cache (see chunk_blocks_ below).
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

    rocksdb::DBOptions db;
    db.create_if_missing = true;
    db.create_missing_column_families = true;
    // A chunk and its blob record live in different families: flush them together so a
    // recovered database never has one without the other.
    db.atomic_flush = true;
    db.max_background_jobs = 4;
    db.bytes_per_sync = 1 << 20;
    db.max_log_file_size = 16 << 20;
    db.keep_log_file_num = 4;
    db.max_total_wal_size = 512 << 20;

    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, base_family(cache));
    for (std::size_t i = 0; i < family_count; ++i) {
      descriptors.emplace_back(family_names[i], static_cast<family>(i) == family::chunks
                                                    ? chunk_family(chunk_blocks_, options.layout)
                                                    : base_family(cache));
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(db, options.path, descriptors, &handles, &raw);
    if (!s.ok()) {
      throw std::runtime_error("cannot open the cache store at " + options.path + ": " +
                               s.ToString());
    }
    db_.reset(raw);
    default_ = handles[0];
    handles_.assign(handles.begin() + 1, handles.end());
    // Without sync_writes, nothing goes through the write-ahead log. Writing every chunk there
    // cost a quarter of layercached's CPU in a cold pull (Debian's RocksDB checksums log
    // records in software) and wrote every byte to disk once more. atomic_flush (above) makes
    // every flush a consistent cut across the families, so a crash loses the writes since the
    // last flush, never half of one: a chunk without its record, or the reverse. persist()
    // asks for a flush where losing writes would cost most (a blob just verified whole).
    path_ = options.path;
    write_options_.disableWAL = !options.sync_writes;
    write_options_.sync = options.sync_writes;
  }

  ~rocksdb_backend() override {
    // Writes that bypassed the WAL live only in memtables: flush them (all families at once).
    if (write_options_.disableWAL) {
      rocksdb::FlushOptions fo;
      fo.wait = true;
      fo.allow_write_stall = true;
      db_->Flush(fo, handles_).PermitUncheckedError();
    }
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db_->DestroyColumnFamilyHandle(default_).PermitUncheckedError();
    // A failure to close leaves nothing to do: what was flushed is consistent.
    db_->Close().PermitUncheckedError();
  }

  std::optional<std::uint64_t> free_disk() override {
    struct statvfs st {};
    if (::statvfs(path_.c_str(), &st) != 0) return std::nullopt;
    return std::uint64_t{st.f_bavail} * st.f_frsize;
  }

  std::uint64_t block_cache_bytes() override { return block_cache_->GetUsage(); }

  std::uint64_t write_buffer_bytes() override {
    std::uint64_t bytes = 0;  // mutable and immutable memtables of every family
    if (!db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kSizeAllMemTables, &bytes)) {
      return 0;
    }
    return bytes;
  }

  void persist() override {
    if (!write_options_.disableWAL) return;  // the WAL already has every write
    rocksdb::FlushOptions fo;
    fo.wait = false;
    fo.allow_write_stall = true;
    // A failed flush is retried by the next one; the data stays in memory meanwhile.
    db_->Flush(fo, handles_).PermitUncheckedError();
  }

  std::unique_ptr<write_batch> make_batch() override {
    return std::make_unique<rocksdb_batch>(handles_, batches_);
  }

  status write(write_batch& batch) override {
    auto& b = static_cast<rocksdb_batch&>(batch);
    if (!b.error_.ok()) return from_rocksdb(b.error_, "building a write batch");
    return from_rocksdb(db_->Write(write_options_, &b.batch_), "write");
  }

  status read(family f, std::string_view key,
              const std::function<void(std::string_view)>& on_value) override {
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(f), slice(key), &value);
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
    p->cache = f == family::chunks ? chunk_blocks_ : block_cache_;
    rocksdb::ReadOptions ro;
    ro.verify_checksums = false;  // the value's own CRC-32C is checked by the caller
    rocksdb::Status s = db_->Get(ro, cf(f), slice(key), &p->slice);
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
    for (it->Seek(slice(prefix)); it->Valid(); it->Next()) {
      const rocksdb::Slice k = it->key();
      const std::string_view key(k.data(), k.size());
      if (!key.starts_with(prefix)) break;
      std::string_view value;
      if (!keys_only) value = std::string_view(it->value().data(), it->value().size());
      if (!on_entry(key, value)) break;
    }
    return from_rocksdb(it->status(), "scan");
  }

  void reclaim(family f, std::string_view begin, std::string_view end) override {
    const rocksdb::Slice b = slice(begin);
    const rocksdb::Slice e = slice(end);
    // Only a hint: marks the files holding the range for compaction. Failing it costs disk
    // space until a later compaction, nothing else.
    rocksdb::experimental::SuggestCompactRange(db_.get(), cf(f), &b, &e).PermitUncheckedError();
  }

 private:
  rocksdb::ColumnFamilyHandle* cf(family f) const { return handles_[static_cast<std::size_t>(f)]; }

  // The block cache (cache.block_cache) keeps what is small and read everywhere: index and
  // filter blocks, blob records, manifests, tags. Chunk blocks go to a small cache of their
  // own: the chunk store's memory cache decides which chunks stay in memory, and keeps
  // them by pinning their blocks here. Pinned blocks count against the cache that holds
  // them; in the shared block cache a full memory cache left no room for anything else, so
  // 128 + 128 MiB configured held 128 MiB of chunks. A chunk read must still go through a
  // cache: RocksDB hands out a pinned block only from one, and copies the value otherwise
  // (a 1 MiB copy per whole-chunk read, 10% of the CPU of a warm pull). Unpinned chunk
  // blocks here are evicted as new ones arrive (usage is above this capacity whenever the
  // memory cache is full; inserts still succeed, the capacity is not strict).
  static constexpr std::size_t chunk_blocks_bytes = 16 << 20;
  static constexpr int chunk_blocks_shard_bits = 4;

  std::shared_ptr<rocksdb::Cache> block_cache_;
  std::shared_ptr<rocksdb::Cache> chunk_blocks_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* default_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // indexed by family
  rocksdb::WriteOptions write_options_;
  batch_pool batches_;
  std::string path_;
};

}  // namespace

std::unique_ptr<backend> open_rocksdb_backend(const store_options& options) {
  return std::make_unique<rocksdb_backend>(options);
}

}  // namespace layercache::cache::detail
