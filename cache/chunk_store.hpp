// The node-local chunk store: blobs as fixed-size chunks, manifests and tags.
//
// cache/ knows RocksDB and nothing of HTTP; this header knows neither. Errors are values
// (`status`), never exceptions, except when a store is opened at start-up.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/digest.hpp"
#include "oci/range.hpp"

namespace layercache::cache {

enum class errc { ok, not_found, corruption, io_error, no_space, invalid_argument };

// "ok", "not_found", ...
[[nodiscard]] std::string_view to_string(errc code);

// The outcome of a store operation. `message` is for logs and says what and where; callers
// branch on `code` only.
struct [[nodiscard]] status {
  errc code = errc::ok;
  std::string message;

  [[nodiscard]] bool ok() const { return code == errc::ok; }

  [[nodiscard]] static status success() { return {}; }
  [[nodiscard]] static status not_found(std::string message) {
    return {errc::not_found, std::move(message)};
  }
  [[nodiscard]] static status corruption(std::string message) {
    return {errc::corruption, std::move(message)};
  }
  [[nodiscard]] static status io_error(std::string message) {
    return {errc::io_error, std::move(message)};
  }
  [[nodiscard]] static status no_space(std::string message) {
    return {errc::no_space, std::move(message)};
  }
  [[nodiscard]] static status invalid_argument(std::string message) {
    return {errc::invalid_argument, std::move(message)};
  }
};

// What the store knows about one blob. Which chunks are present is not recorded here: a chunk
// is present exactly when its bytes are (see chunk_store::present_chunks), so metadata can never
// claim a chunk that is not there.
// Where the bytes of a blob not yet verified came from (an upstream, as the caller names it;
// 0 = none). Until a blob is verified whole, its chunks are only as good as the upstream that
// served them: they belong to that origin, and only a verified blob is anyone's.
using origin_id = std::uint64_t;

struct blob_record {
  std::uint64_t size = 0;          // the whole blob's bytes
  std::uint32_t chunk_size = 0;    // fixed when the record is created; later puts must match it
  bool verified = false;           // the whole blob was hashed and matched its digest
  std::uint64_t last_access = 0;   // unix seconds: creation or the last touch()
  std::uint64_t hits = 0;          // touch() calls
  std::uint64_t stored_bytes = 0;  // bytes of the chunks present
  origin_id origin = 0;            // whose put_chunk() created it

  // ceil(size / chunk_size); 0 for an empty blob.
  [[nodiscard]] std::uint32_t chunk_count() const;
  // Every chunk is stored (stored_bytes counts exactly the chunks present).
  [[nodiscard]] bool complete() const { return stored_bytes >= size; }
  // Length of chunk `index` (the last one is the remainder); 0 when out of range.
  [[nodiscard]] std::uint32_t chunk_length(std::uint32_t index) const;
  // The blob's bytes chunk `index` holds, [index * chunk_size, min(that + chunk_size, size));
  // empty when it is past the end.
  [[nodiscard]] oci::byte_interval chunk_interval(std::uint32_t index) const;
};

struct stored_manifest {
  std::string media_type;
  std::string bytes;  // exactly as upstream sent them
};

struct tag_record {
  oci::digest digest;
  std::int64_t fetched_at = 0;  // unix seconds
};

// Figures for metrics and the admin API. Counters count since the store was opened.
struct store_stats {
  std::uint64_t blobs = 0;           // blobs with a record
  std::uint64_t verified_blobs = 0;  // of which verified whole
  std::uint64_t chunks = 0;          // chunks present
  std::uint64_t used_bytes = 0;
  std::uint64_t capacity = 0;
  std::uint64_t evicted_blobs = 0;
  std::uint64_t evicted_bytes = 0;
  std::uint64_t corrupt_chunks = 0;  // chunks that failed their checksum and were dropped
  // The in-memory cache of recently read chunks (store_options::memory_cache).
  std::uint64_t memory_bytes = 0;   // chunk bytes it holds
  std::uint64_t memory_hits = 0;    // reads it answered without a store read
  std::uint64_t memory_shared = 0;  // reads answered with a chunk another reader still held
  std::uint64_t memory_misses = 0;  // reads that went to the store
  // RocksDB's block cache (store_options::block_cache): bytes it holds (pinned ones too).
  std::uint64_t block_cache_bytes = 0;
  // RocksDB's memtables: stored chunks not yet flushed to table files.
  std::uint64_t write_buffer_bytes = 0;
  // The disk under the store (store_options::min_free_disk, max_disk).
  bool disk_full = false;  // chunks are refused until space frees (min_free_disk, max_disk or a
                           // failed write)
  std::uint64_t disk_refusals = 0;               // chunks refused for lack of disk
  std::optional<std::uint64_t> disk_bytes;       // the store's files; nullopt: in memory
  std::optional<std::uint64_t> disk_free_bytes;  // free on their disk; nullopt: in memory
  std::uint64_t max_disk = 0;                    // store_options::max_disk
  std::uint64_t disk_compactions = 0;  // compactions started because the files reached max_disk
};

// A chunk's bytes, shared and immutable. get_chunk_shared() hands out the store's own buffer
// (a RocksDB block, pinned by `owner`), not a copy.
struct chunk_bytes {
  std::shared_ptr<const void> owner;
  std::string_view bytes;
  [[nodiscard]] const char* data() const { return bytes.data(); }
  [[nodiscard]] std::size_t size() const { return bytes.size(); }
};
using shared_chunk = std::shared_ptr<const chunk_bytes>;

struct blob_entry {
  oci::digest digest;
  blob_record record;
};

// Thread-safe: any method may be called from any thread at once. Blocking (disk I/O): callers
// run it on the blocking-I/O pool, never on I/O threads — except try_blob, try_touch and
// memory_chunk, which never block. Bytes handed in are copied; nothing returned refers to
// store memory, except a shared_chunk (which keeps what it refers to alive).
class chunk_store {
 public:
  virtual ~chunk_store() = default;

  // Blob metadata; nullopt when unknown.
  [[nodiscard]] virtual std::optional<blob_record> blob(const oci::digest& d) = 0;

  // Stores chunk `index` of blob `d` (`blob_size` bytes cut into `chunk_size` chunks), creating
  // the blob record on first use. The chunk and the record update land in one atomic write.
  // Every chunk but the last must be exactly chunk_size bytes; the last is the remainder.
  // Storing a chunk that is already present is a no-op (content is immutable).
  // invalid_argument: a zero size, an index past the end, a wrong length, or sizes that disagree
  //   with the existing record (e.g. the configured chunk size changed: the stored one wins and
  //   the caller must use blob(d)->chunk_size).
  // no_space: storing would exceed capacity() and evicting other blobs cannot make room. The
  //   blob being written is never evicted to make room for itself.
  // A new record takes `origin` (as does one of origin 0); a blob not verified yet takes
  // chunks only from its own origin (invalid_argument otherwise), so bytes one upstream served
  // never mix with another's before the whole was checked.
  // `*created` (when given) says whether this call wrote the chunk: false when it was stored
  // already (a stored chunk keeps the bytes it was first written with) or on an error.
  virtual status put_chunk(const oci::digest& d, std::uint64_t blob_size, std::uint32_t chunk_size,
                           std::uint32_t index, std::string_view bytes, origin_id origin = 0,
                           bool* created = nullptr) = 0;

  // Reads chunk `index` of `d` into `out` (replacing its content), verifying the chunk's
  // checksum. not_found when absent; corruption when the checksum fails: the chunk is then
  // removed (and the blob marked unverified), so a refetch can replace it.
  virtual status get_chunk(const oci::digest& d, std::uint32_t index, std::string& out) = 0;

  // As get_chunk, but the bytes are shared, not copied: from memory when they are there (no
  // store read, no checksum: they were checked when read) — the memory cache of recently read
  // chunks, or a chunk another caller still holds (read once for readers side by side) —
  // else read and checked as get_chunk does. With `admit`, a chunk read from the store enters
  // the memory cache (callers admit chunks read for part of their bytes, the pattern of
  // random range reads); without, it enters at its second read, if that comes before a
  // memory cache's worth of other whole reads twice over (an image pulled again is kept, one
  // pull bigger than that passes without flushing what is kept). erase_blob() and a failed
  // checksum drop a blob's chunks from it; eviction does not need to (a chunk's bytes never
  // change, and a read served from memory is as correct as one from the store).
  virtual status get_chunk_shared(const oci::digest& d, std::uint32_t index, bool admit,
                                  shared_chunk& out) = 0;

  // For I/O threads: no disk I/O, and no wait for the lock that is held around it. false when
  // the answer would have needed either: ask blob() / touch() on the blocking pool instead.
  virtual bool try_blob(const oci::digest& d, std::optional<blob_record>& out) = 0;
  virtual bool try_touch(const oci::digest& d) = 0;
  // The chunk from memory (the memory cache, or a chunk another reader holds: see
  // get_chunk_shared()), or nullptr: never reads the store (callers go on to
  // get_chunk_shared() on the pool, which counts the miss).
  virtual shared_chunk memory_chunk(const oci::digest& d, std::uint32_t index) = 0;

  // Presence is the chunk's own key, so these cost about a read of the chunk (RocksDB loads the
  // block or blob holding it): prefer get_chunk() and handle not_found where bytes are wanted.
  [[nodiscard]] virtual bool has_chunk(const oci::digest& d, std::uint32_t index) = 0;

  // Indexes of the chunks of `d` present, ascending.
  [[nodiscard]] virtual std::vector<std::uint32_t> present_chunks(const oci::digest& d) = 0;

  // Records that the whole blob was hashed and matched. not_found for an unknown blob.
  virtual status mark_verified(const oci::digest& d) = 0;

  // Records an access (hits + 1, last_access = now) and makes `d` the most recently used.
  // Persisted lazily, in batches; an unknown digest is ignored.
  virtual void touch(const oci::digest& d) = 0;

  // Removes a blob's record and all its chunks. not_found for an unknown blob.
  virtual status erase_blob(const oci::digest& d) = 0;

  // Manifests and tags are small and not counted against capacity. The store does not re-hash:
  // the caller has checked that `bytes` match `d`.
  virtual status put_manifest(const oci::digest& d, std::string_view media_type,
                              std::string_view bytes) = 0;
  [[nodiscard]] virtual std::optional<stored_manifest> manifest(const oci::digest& d) = 0;

  // `key` is built by the caller (upstream + repository + tag + accept class); a put replaces.
  virtual status put_tag(std::string_view key, const tag_record& t) = 0;
  [[nodiscard]] virtual std::optional<tag_record> tag(std::string_view key) = 0;

  // Access profiles (cache/profile.hpp encodes them), by manifest digest. Small, not counted
  // against capacity, checksummed: a corrupt one reads as absent.
  virtual status put_profile(const oci::digest& manifest, std::string_view bytes) = 0;
  [[nodiscard]] virtual std::optional<std::string> profile(const oci::digest& manifest) = 0;
  virtual status erase_profile(const oci::digest& manifest) = 0;
  // Manifests that have a profile.
  [[nodiscard]] virtual std::vector<oci::digest> profiles() = 0;

  // Bytes of all chunks stored (payload only); kept across restarts.
  [[nodiscard]] virtual std::uint64_t used_bytes() = 0;
  [[nodiscard]] virtual std::uint64_t capacity() const = 0;
  // Changes the capacity (e.g. on a config reload); shrinking evicts least-recently-used
  // blobs, sparing pinned ones, until used_bytes() fits when possible.
  virtual void set_capacity(std::uint64_t capacity) = 0;

  [[nodiscard]] virtual store_stats stats() = 0;
  // Every blob record, most recently used first.
  [[nodiscard]] virtual std::vector<blob_entry> list_blobs() = 0;

  // Evicts least-recently-used blobs until used_bytes() <= target; returns the chunk bytes
  // evicted. Blobs for which `pinned` returns true (being served) are skipped; `pinned` is
  // called with the store locked (see "Eviction queries" below).
  virtual std::uint64_t evict_to(std::uint64_t target,
                                 const std::function<bool(const oci::digest&)>& pinned) = 0;

  // Eviction queries: `pinned` (set_pinned, evict_to) and `hot` (set_hot) are the store's only
  // calls into its user's code (besides the injected clock), and it makes them with its lock
  // held, during an eviction (by put_chunk, set_capacity, evict_to). They are questions, not
  // events: their answers decide which blobs the same critical section removes — the one that
  // checked the room a put needs and then writes the chunk. Asked with the lock released,
  // another writer could change the LRU order and the room between the answer and the
  // eviction (two puts evicting for the same room, or a blob bumped meanwhile evicted as least
  // recent). The store sends no events: nothing learns of an eviction (a reader that misses a
  // chunk refills it).
  // Safe because each callback must: answer from its own state, taking at most one lock of
  // its own that it releases before returning; never call the store, nor wait for anything
  // that does. The lock order is then the store's lock, then the callback's; whoever holds a
  // lock a callback takes must not call the store (content/blob_source.cpp and
  // server/prefetch.cpp never do; TSan reports an inversion the tests run into).
  //
  // Blobs for which `pinned` returns true are never evicted by put_chunk to make room (they
  // are being read). Set once, before use.
  virtual void set_pinned(std::function<bool(const oci::digest&)> pinned) = 0;

  // Bytes of a blob that access profiles name; empty: a cold blob.
  using byte_ranges = std::vector<oci::byte_interval>;
  // Eviction order: least recently used cold blobs first; then, from hot blobs, the chunks no
  // hot range touches (the blob stays, no longer verified); then hot blobs whole. `hot` is
  // asked at most once per blob and eviction. An eviction query (above). Set once, before use.
  virtual void set_hot(std::function<byte_ranges(const oci::digest&)> hot) = 0;
};

// Unix seconds; injected so tests control time.
using clock_fn = std::function<std::uint64_t()>;

// Where RocksDB keeps chunk bytes (chunks column family).
enum class chunk_layout {
  sst,         // in SST data blocks, cached in the block cache
  blob_files,  // BlobDB (enable_blob_files): SSTs hold references, bytes live in blob files
};

// SST values: warm reads are about 3x faster than through BlobDB and puts cost the same
// (tests/bench/store_bench.cpp; docs/benchmarks.md, "Chunk store layouts"). BlobDB would write
// chunk bytes once instead of rewriting them in compactions: revisit if write amplification
// shows on disks.
inline constexpr chunk_layout default_chunk_layout = chunk_layout::sst;

struct store_options {
  std::string path;               // directory; created when missing
  std::uint64_t capacity = 0;     // chunk bytes
  std::uint64_t block_cache = 0;  // bytes of RocksDB block cache (shared by all families)
  // false: writes skip the write-ahead log; a crash loses those since the last flush (a
  // consistent cut: see rocksdb_backend.cpp). true: every write is logged and fsynced.
  bool sync_writes = false;
  chunk_layout layout = default_chunk_layout;
  clock_fn clock;                  // empty: the system clock
  std::uint64_t memory_cache = 0;  // bytes of checked chunks kept in memory (get_chunk_shared)
  // Chunks are refused (no_space) while the disk under `path` has less free space than this:
  // RocksDB needs room to flush memtables and compact. Checked at most every 100 ms. When the
  // disk fills anyway (another process), a failed write stops all writing until there is room
  // again (store_stats::disk_full), then writing resumes by itself.
  std::uint64_t min_free_disk = 0;
  // Chunks are refused while the store's files take more than this (0: no limit); reaching it
  // starts a compaction that returns the space of deleted chunks and, when that is not enough,
  // evicts least recently used blobs. Checked at most every 100 ms.
  std::uint64_t max_disk = 0;
};

// Opens (creating) the RocksDB store at options.path. Start-up only: throws std::runtime_error
// naming the path and the cause when it cannot be opened.
[[nodiscard]] std::unique_ptr<chunk_store> open_rocksdb_store(const store_options& options);

// A store that keeps everything in memory: for tests and a no-disk mode.
[[nodiscard]] std::unique_ptr<chunk_store> make_memory_store(std::uint64_t capacity,
                                                             clock_fn clock = {},
                                                             std::uint64_t memory_cache = 0);

}  // namespace layercache::cache
