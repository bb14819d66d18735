// The chunk_store logic over a backend: blob records in memory, byte accounting, eviction,
// corrupt-chunk removal. The byte formats of keys and values are records.hpp's; the recency
// order is blob_lru's (lru.hpp); the memory cache of chunks is memory_chunks.hpp's.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "cache/backend.hpp"
#include "cache/lru.hpp"
#include "cache/memory_chunks.hpp"
#include "cache/records.hpp"

namespace layercache::cache {

std::string_view to_string(errc code) {
  switch (code) {
    case errc::ok:
      return "ok";
    case errc::not_found:
      return "not_found";
    case errc::corruption:
      return "corruption";
    case errc::io_error:
      return "io_error";
    case errc::no_space:
      return "no_space";
    case errc::invalid_argument:
      return "invalid_argument";
  }
  return "unknown";
}

std::uint32_t blob_record::chunk_count() const {
  if (chunk_size == 0) return 0;
  const std::uint64_t n = (size + chunk_size - 1) / chunk_size;
  return n > UINT32_MAX ? 0 : static_cast<std::uint32_t>(n);
}

std::uint32_t blob_record::chunk_length(std::uint32_t index) const {
  const std::uint32_t n = chunk_count();
  if (index >= n) return 0;
  if (index + 1 < n) return chunk_size;
  return static_cast<std::uint32_t>(size - std::uint64_t{index} * chunk_size);
}

oci::byte_interval blob_record::chunk_interval(std::uint32_t index) const {
  const std::uint64_t begin = std::min(std::uint64_t{index} * chunk_size, size);
  return {begin, std::min(begin + chunk_size, size)};
}

namespace detail {
namespace {

constexpr std::size_t touch_flush_threshold = 64;  // dirty records written together

std::uint64_t system_now() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

class store final : public chunk_store {
 public:
  store(std::unique_ptr<backend> b, std::uint64_t capacity, clock_fn clock,
        std::uint64_t memory_cache, std::uint64_t min_free_disk, std::uint64_t max_disk)
      : backend_(std::move(b)),
        capacity_(capacity),
        clock_(clock ? std::move(clock) : clock_fn(system_now)),
        memory_(memory_cache),
        min_free_disk_(min_free_disk),
        max_disk_(max_disk) {
    load();
  }
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  ~store() override {
    std::lock_guard lock(mu_);
    // Losing recent touches only makes eviction slightly less accurate.
    (void)flush_touches_locked();
  }

  std::optional<blob_record> blob(const oci::digest& d) override {
    std::lock_guard lock(mu_);
    auto it = blobs_.find(d.raw());
    if (it == blobs_.end()) return std::nullopt;
    return it->second.record;
  }

  bool try_blob(const oci::digest& d, std::optional<blob_record>& out) override {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    auto it = blobs_.find(d.raw());
    out = it == blobs_.end() ? std::nullopt : std::optional<blob_record>(it->second.record);
    return true;
  }

  status put_chunk(const oci::digest& d, std::uint64_t blob_size, std::uint32_t chunk_size,
                   std::uint32_t index, std::string_view bytes, origin_id origin,
                   bool* created) override {
    if (created != nullptr) *created = false;
    chunk_write w;
    w.shape.size = blob_size;
    w.shape.chunk_size = chunk_size;
    if (status s = check_shape(d, w.shape, index, bytes.size()); !s.ok()) return s;
    w.raw = d.raw();
    w.key = chunk_key(w.raw, index);
    w.index = index;
    w.checksum = encode_checksum(bytes);
    w.bytes = bytes;
    w.origin = origin;

    std::lock_guard lock(mu_);
    auto it = blobs_.find(w.raw);
    if (it != blobs_.end()) {
      if (status s = check_record(d, it->second.record, w); !s.ok()) return s;
      // Stored already (content is immutable): the record's presence knows, with no read.
      if (it->second.present.test(index)) return status::success();
    }
    if (status s = make_room_locked(d, w.raw, bytes.size()); !s.ok()) return s;
    status s = write_chunk_locked(d, it, w);
    if (created != nullptr) *created = s.ok();
    return s;
  }

  status get_chunk(const oci::digest& d, std::uint32_t index, std::string& out) override {
    const std::string raw = d.raw();
    const std::string key = chunk_key(raw, index);
    bool corrupt = false;
    status s = backend_->read(family::chunks, key, [&](std::string_view value) {
      if (auto bytes = checked_bytes(value)) {
        out.assign(bytes->data(), bytes->size());
      } else {
        corrupt = true;
      }
    });
    if (!s.ok() || !corrupt) return s;
    return remove_corrupt_chunk(d, raw, key, index, out);
  }

  status get_chunk_shared(const oci::digest& d, std::uint32_t index, bool admit,
                          shared_chunk& out) override {
    const std::string raw = d.raw();
    const std::string key = chunk_key(raw, index);
    if (auto hit = memory_.find(key)) {
      out = std::move(hit);
      return status::success();
    }
    const std::uint64_t generation = memory_.generation();
    // No copy: the bytes stay in the backend's buffer, which the chunk keeps alive.
    auto chunk = std::make_shared<chunk_bytes>();
    std::string_view value;
    status s = backend_->read_shared(family::chunks, key, chunk->owner, value);
    if (!s.ok()) return s;
    if (auto bytes = checked_bytes(value)) {
      chunk->bytes = *bytes;
    } else {
      auto copy = std::make_shared<std::string>();
      chunk->owner.reset();
      s = remove_corrupt_chunk(d, raw, key, index, *copy);
      if (!s.ok()) return s;
      chunk->bytes = *copy;  // written again meanwhile, and good
      chunk->owner = std::move(copy);
    }
    out = chunk;
    memory_.add(key, chunk, admit, generation);
    return s;
  }

  shared_chunk memory_chunk(const oci::digest& d, std::uint32_t index) override {
    return memory_.find(chunk_key(d.raw(), index), false);
  }

  bool has_chunk(const oci::digest& d, std::uint32_t index) override {
    std::lock_guard lock(mu_);
    auto it = blobs_.find(d.raw());
    return it != blobs_.end() && it->second.present.test(index);
  }

  std::vector<std::uint32_t> present_chunks(const oci::digest& d) override {
    // The record's presence, written in the same batch as the chunks it counts: no scan of
    // chunk keys (which reads each chunk's block: a delay before a read's first byte,
    // docs/benchmarks.md, 2026-11-29 afternoon).
    std::lock_guard lock(mu_);
    auto it = blobs_.find(d.raw());
    if (it == blobs_.end()) return {};
    return it->second.present.indexes();
  }

  status mark_verified(const oci::digest& d) override {
    std::lock_guard lock(mu_);
    auto it = blobs_.find(d.raw());
    if (it == blobs_.end()) return status::not_found(d.str() + " is not stored");
    blob_record r = it->second.record;
    r.verified = true;
    auto batch = backend_->make_batch();
    batch->put(family::blobs, it->first, encode_blob(r));
    if (status s = backend_->write(*batch); !s.ok()) return s;
    set_clean_locked(it->second);
    it->second.record = r;
    // A whole, verified blob is what a restart after a crash should find again.
    backend_->persist();
    return status::success();
  }

  void touch(const oci::digest& d) override {
    std::lock_guard lock(mu_);
    touch_locked(d, true);
  }

  bool try_touch(const oci::digest& d) override {
    std::unique_lock lock(mu_, std::try_to_lock);
    return lock.owns_lock() && touch_locked(d, false);
  }

  status erase_blob(const oci::digest& d) override {
    // Purged (its bytes may be wrong) or deleted by hand: memory must not keep serving it.
    memory_.drop(d.raw());
    std::lock_guard lock(mu_);
    auto it = blobs_.find(d.raw());
    if (it == blobs_.end()) return status::not_found(d.str() + " is not stored");
    status s = erase_locked(it);
    // A purged blob (its bytes did not match) must not come back after a crash.
    if (s.ok()) backend_->persist();
    return s;
  }

  status put_manifest(const oci::digest& d, std::string_view media_type,
                      std::string_view bytes) override {
    auto batch = backend_->make_batch();
    batch->put(family::manifests, d.raw(), manifest_head(media_type), bytes);
    return backend_->write(*batch);
  }

  std::optional<stored_manifest> manifest(const oci::digest& d) override {
    std::optional<stored_manifest> m;
    (void)backend_->read(family::manifests, d.raw(),
                         [&](std::string_view value) { m = decode_manifest(value); });
    return m;
  }

  status put_profile(const oci::digest& manifest, std::string_view bytes) override {
    auto batch = backend_->make_batch();
    batch->put(family::meta, profile_key(manifest), encode_checksum(bytes), bytes);
    status s = backend_->write(*batch);
    if (s.ok()) backend_->persist();  // a profile took a whole recording window to make
    return s;
  }

  std::optional<std::string> profile(const oci::digest& manifest) override {
    std::optional<std::string> out;
    (void)backend_->read(family::meta, profile_key(manifest), [&](std::string_view value) {
      if (auto bytes = checked_bytes(value)) out.emplace(*bytes);
    });
    return out;
  }

  status erase_profile(const oci::digest& manifest) override {
    if (!profile(manifest)) return status::not_found(manifest.str() + " has no profile");
    auto batch = backend_->make_batch();
    batch->erase(family::meta, profile_key(manifest));
    return backend_->write(*batch);
  }

  std::vector<oci::digest> profiles() override {
    std::vector<oci::digest> out;
    (void)backend_->scan(family::meta, profile_prefix, backend::scan_mode::keys,
                         [&](std::string_view key, std::string_view) {
                           if (auto d = digest_from_raw(key.substr(profile_prefix.size()))) {
                             out.push_back(std::move(*d));
                           }
                           return true;
                         });
    return out;
  }

  status put_tag(std::string_view key, const tag_record& t) override {
    auto batch = backend_->make_batch();
    batch->put(family::tags, key, encode_tag(t));
    return backend_->write(*batch);
  }

  std::optional<tag_record> tag(std::string_view key) override {
    std::optional<tag_record> t;
    (void)backend_->read(family::tags, key, [&](std::string_view value) { t = decode_tag(value); });
    return t;
  }

  std::uint64_t used_bytes() override {
    std::lock_guard lock(mu_);
    return used_;
  }

  std::uint64_t capacity() const override { return capacity_.load(); }

  void set_capacity(std::uint64_t capacity) override {
    std::lock_guard lock(mu_);
    capacity_ = capacity;
    if (used_ > capacity) evict_locked(capacity, pinned_ ? &pinned_ : nullptr, nullptr);
  }

  store_stats stats() override {
    store_stats s;
    // Read without the lock: a walk of the store's directory and a statfs.
    s.disk_bytes = backend_->disk_bytes();
    s.disk_free_bytes = backend_->free_disk();
    s.max_disk = max_disk_;
    std::lock_guard lock(mu_);
    s.blobs = blobs_.size();
    for (const auto& [raw, e] : blobs_) {
      if (e.record.verified) ++s.verified_blobs;
      // At most one chunk (the last) is shorter than chunk_size.
      if (e.record.chunk_size > 0) {
        s.chunks += (e.record.stored_bytes + e.record.chunk_size - 1) / e.record.chunk_size;
      }
    }
    s.used_bytes = used_;
    s.capacity = capacity_;
    s.evicted_blobs = evicted_blobs_;
    s.evicted_bytes = evicted_bytes_;
    s.corrupt_chunks = corrupt_chunks_;
    memory_.fill(s);
    s.block_cache_bytes = backend_->block_cache_bytes();
    s.write_buffer_bytes = backend_->write_buffer_bytes();
    // As the next chunk would find it: refused at the last decision, writes stopped, or less
    // free now than min_free_disk_ and the memtables need (a flush or a compaction took room
    // since the last chunk was stored; disk_has_room_locked counts memtables the same way).
    const bool low_now = min_free_disk_ != 0 &&
                         free_after_flush(s.disk_free_bytes, s.write_buffer_bytes) < min_free_disk_;
    s.disk_full = disk_full_ || backend_->writes_stopped() || low_now;
    s.disk_refusals = disk_refusals_;
    s.disk_compactions = disk_compactions_;
    return s;
  }

  std::vector<blob_entry> list_blobs() override {
    std::lock_guard lock(mu_);
    std::vector<blob_entry> out;
    out.reserve(blobs_.size());
    lru_.visit_most_recent([&](const std::string& raw) {
      auto e = blobs_.find(raw);
      if (e != blobs_.end()) out.push_back({e->second.digest, e->second.record});
    });
    return out;
  }

  void set_pinned(std::function<bool(const oci::digest&)> pinned) override {
    std::lock_guard lock(mu_);
    pinned_ = std::move(pinned);
  }

  void set_hot(std::function<byte_ranges(const oci::digest&)> hot) override {
    std::lock_guard lock(mu_);
    hot_ = std::move(hot);
  }

  std::uint64_t evict_to(std::uint64_t target,
                         const std::function<bool(const oci::digest&)>& pinned) override {
    std::lock_guard lock(mu_);
    return evict_locked(target, pinned ? &pinned : nullptr, nullptr);
  }

 private:
  struct entry {
    oci::digest digest;
    blob_record record;
    chunk_presence present;  // which chunks are stored (as written with them)
    bool dirty = false;      // record has touches not yet written
  };
  using entry_map = std::unordered_map<std::string, entry>;

  // A chunk put_chunk() stores, checked against its blob's shape.
  struct chunk_write {
    blob_record shape;  // size and chunk size: a new record's, and what a stored one must match
    std::string raw;    // the blob's raw digest
    std::string key;    // the chunk's
    std::uint32_t index = 0;
    std::string checksum;
    std::string_view bytes;
    origin_id origin = 0;
  };

  // invalid_argument unless chunk `index` of a blob of `shape` exists and is `length` bytes.
  static status check_shape(const oci::digest& d, const blob_record& shape, std::uint32_t index,
                            std::size_t length) {
    if (shape.size == 0 || shape.chunk_size == 0 || shape.chunk_count() == 0) {
      return status::invalid_argument(d.str() + ": bad blob size " + std::to_string(shape.size) +
                                      " or chunk size " + std::to_string(shape.chunk_size));
    }
    const std::uint32_t expected = shape.chunk_length(index);
    if (expected == 0) {
      return status::invalid_argument(d.str() + ": chunk " + std::to_string(index) +
                                      " is past the end (" + std::to_string(shape.chunk_count()) +
                                      " chunks)");
    }
    if (length != expected) {
      return status::invalid_argument(d.str() + ": chunk " + std::to_string(index) + " must be " +
                                      std::to_string(expected) + " bytes, got " +
                                      std::to_string(length));
    }
    return status::success();
  }

  // invalid_argument when `w` disagrees with the blob's record `r`: another shape, or another
  // origin's chunk for a blob not verified yet.
  static status check_record(const oci::digest& d, const blob_record& r, const chunk_write& w) {
    if (r.size != w.shape.size || r.chunk_size != w.shape.chunk_size) {
      return status::invalid_argument(d.str() + " is stored with size " + std::to_string(r.size) +
                                      " and chunk size " + std::to_string(r.chunk_size) + ", not " +
                                      std::to_string(w.shape.size) + " and " +
                                      std::to_string(w.shape.chunk_size));
    }
    if (!r.verified && r.origin != 0 && r.origin != w.origin) {
      return status::invalid_argument(d.str() + " is being stored from another upstream");
    }
    return status::success();
  }

  // Room for `length` more bytes of blob `raw`: within the capacity (evicting other blobs,
  // never `raw` itself nor pinned ones) and the disk's min_free_disk_. no_space otherwise.
  status make_room_locked(const oci::digest& d, const std::string& raw, std::uint64_t length) {
    if (length > capacity_) {
      return status::no_space("chunk of " + std::to_string(length) +
                              " bytes is larger than the capacity");
    }
    if (!disk_has_room_locked(raw, length)) {
      ++disk_refusals_;
      if (over_max_disk_) {
        return status::no_space("the store's files take " + std::to_string(disk_used_) +
                                " bytes, cache.max_disk is " + std::to_string(max_disk_) +
                                ": not storing until a compaction returns space");
      }
      return status::no_space("the disk under the store has " + std::to_string(disk_free_) +
                              " bytes free, less than cache.min_free_disk (" +
                              std::to_string(min_free_disk_) + "): not storing");
    }
    if (used_ + length > capacity_) {
      evict_locked(capacity_ - length, pinned_ ? &pinned_ : nullptr, &raw);
      if (used_ + length > capacity_) {
        return status::no_space(d.str() + ": " + std::to_string(used_) + " of " +
                                std::to_string(capacity_) +
                                " bytes used and nothing more can be evicted");
      }
    }
    return status::success();
  }

  // Writes `w` and its blob's record (`it`'s, or a new one) in one batch, then counts it.
  status write_chunk_locked(const oci::digest& d, entry_map::iterator it, const chunk_write& w) {
    const std::uint64_t length = w.bytes.size();
    blob_record r = it != blobs_.end() ? it->second.record : w.shape;
    if (it == blobs_.end()) r.last_access = clock_();
    if (r.origin == 0) r.origin = w.origin;
    r.stored_bytes += length;
    chunk_presence fresh;  // a new blob's: none stored yet
    if (it == blobs_.end()) fresh = chunk_presence(r.chunk_count());
    const chunk_presence& present = it != blobs_.end() ? it->second.present : fresh;
    auto batch = backend_->make_batch();
    batch->put(family::chunks, w.key, w.checksum, w.bytes);
    batch->put(family::blobs, w.raw, encode_blob(r));
    batch->put(family::blobs, presence_key(w.raw, chunk_presence::segment_of(w.index)),
               present.segment_with(w.index, true));
    batch->put(family::meta, used_bytes_key, encode_u64(used_ + length));
    if (status s = backend_->write(*batch); !s.ok()) return s;

    used_ += length;
    disk_free_ -= std::min<std::uint64_t>(disk_free_, length);
    disk_used_ += length;
    if (it == blobs_.end()) {
      it = blobs_.emplace(w.raw, entry{d, r, std::move(fresh), false}).first;
      lru_.bump(it->first);
    } else {
      set_clean_locked(it->second);
      it->second.record = r;
    }
    it->second.present.set(w.index, true);
    return status::success();
  }

  // Reads every blob record and its presence into memory and checks the used-bytes counter
  // against them; repairs what disagrees (load_presence) in one batch.
  void load() {
    std::vector<std::pair<std::uint64_t, std::string>> order;  // (last_access, raw)
    std::vector<std::string> unreadable;
    std::unordered_map<std::string, std::vector<std::pair<std::uint32_t, std::string>>> segments;
    std::unordered_map<std::string, bool> kept;  // raw → its record keeps presence segments
    status s = backend_->scan(family::blobs, {}, backend::scan_mode::entries,
                              [&](std::string_view k, std::string_view v) {
                                if (const auto parts = presence_key_parts(k)) {
                                  segments[std::string(parts->first)].emplace_back(parts->second,
                                                                                   std::string(v));
                                  return true;
                                }
                                bool presence_kept = false;
                                auto d = digest_from_raw(k);
                                auto r = decode_blob(v, &presence_kept);
                                if (!d || !r) {
                                  unreadable.emplace_back(k);
                                  return true;
                                }
                                order.emplace_back(r->last_access, std::string(k));
                                kept.emplace(std::string(k), presence_kept);
                                blobs_.emplace(std::string(k), entry{std::move(*d), *r, {}, false});
                                return true;
                              });
    if (!s.ok()) throw std::runtime_error("cannot read the cache's blob records: " + s.message);

    auto batch = backend_->make_batch();
    bool repaired = false;
    for (auto& [raw, e] : blobs_) {
      repaired |= load_presence(raw, e, kept.at(raw), segments[raw], *batch);
    }
    for (const auto& [raw, list] : segments) {  // segments no record owns
      if (blobs_.contains(raw)) continue;
      for (const auto& seg : list) batch->erase(family::blobs, presence_key(raw, seg.first));
      repaired = true;
    }

    std::sort(order.begin(), order.end());
    std::uint64_t sum = 0;
    for (const auto& [last_access, raw] : order) {
      lru_.bump(raw);
      sum += blobs_.at(raw).record.stored_bytes;
    }

    std::optional<std::uint64_t> counter;
    s = backend_->read(family::meta, used_bytes_key,
                       [&](std::string_view v) { counter = decode_u64(v); });
    if (!s.ok() && s.code != errc::not_found) {
      throw std::runtime_error("cannot read the cache's used-bytes counter: " + s.message);
    }
    used_ = sum;
    if (counter == sum && unreadable.empty() && !repaired) return;

    // Records that cannot be decoded are dropped with their chunks; the counter is rewritten
    // from the records (which are written in the same batch as their chunks).
    for (const std::string& raw : unreadable) {
      batch->erase(family::blobs, raw);
      batch->erase_range(family::chunks, chunk_key(raw, 0), chunk_range_end(raw));
    }
    batch->put(family::meta, used_bytes_key, encode_u64(sum));
    s = backend_->write(*batch);
    if (!s.ok()) throw std::runtime_error("cannot repair the cache's records: " + s.message);
  }

  // Sets `e.present` from the record's presence segments (`kept`), or, for a record from
  // before them (version 2) or whose segments disagree with it, from its chunk keys: then
  // the record and its segments are written again into `batch` (true returned). A whole
  // version 2 blob needs no scan: its record and chunks were written in one batch.
  bool load_presence(const std::string& raw, entry& e, bool kept,
                     const std::vector<std::pair<std::uint32_t, std::string>>& segments,
                     write_batch& batch) {
    blob_record& r = e.record;
    e.present = chunk_presence(r.chunk_count());
    bool good = kept;
    for (const auto& [seg, value] : segments) good = good && e.present.load_segment(seg, value);
    if (good && stored_bytes_of(r, e.present) == r.stored_bytes) return false;
    if (!kept && r.complete()) {
      e.present = chunk_presence::all(r.chunk_count());
    } else {
      e.present = chunk_presence(r.chunk_count());
      (void)backend_->scan(family::chunks, raw, backend::scan_mode::keys_unchecked,
                           [&](std::string_view key, std::string_view) {
                             if (const auto index = chunk_index(key, raw)) {
                               e.present.set(*index, true);
                             }
                             return true;
                           });
      r.stored_bytes = stored_bytes_of(r, e.present);
      if (e.present.present() != r.chunk_count()) r.verified = false;
    }
    for (const auto& [seg, value] : segments) batch.erase(family::blobs, presence_key(raw, seg));
    for (std::uint32_t seg = 0; seg < e.present.segment_count(); ++seg) {
      batch.put(family::blobs, presence_key(raw, seg), e.present.segment(seg));
    }
    batch.put(family::blobs, raw, encode_blob(r));
    return true;
  }

  // The bytes of the chunks `present` holds of a blob shaped as `r`.
  static std::uint64_t stored_bytes_of(const blob_record& r, const chunk_presence& present) {
    const std::uint32_t n = r.chunk_count();
    if (n == 0) return 0;
    const std::uint64_t last = present.test(n - 1) ? 1 : 0;
    return (present.present() - last) * std::uint64_t{r.chunk_size} + last * r.chunk_length(n - 1);
  }

  // The disk's free space once the memtables are flushed (unknown: unbounded).
  static std::uint64_t free_after_flush(std::optional<std::uint64_t> free,
                                        std::uint64_t memtables) {
    if (!free) return std::numeric_limits<std::uint64_t>::max();
    return *free - std::min(*free, memtables);
  }

  // Whether `length` more bytes leave at least min_free_disk_ free and keep the store's files
  // within max_disk_. Both are read at most every 100 ms (and counted by what was stored in
  // between). Memtables count against both: they become table files at their flush, so the
  // free space is read less what they hold (else the disk goes below min_free_disk_ once they
  // flush, with storing refused no more: `disk_full` 0 on a disk with less free than asked).
  bool disk_has_room_locked(const std::string& raw, std::uint64_t length) {
    if (min_free_disk_ == 0 && max_disk_ == 0) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now - disk_checked_ >= std::chrono::milliseconds(100)) {
      disk_checked_ = now;
      const std::uint64_t memtables = backend_->write_buffer_bytes();
      const auto free = min_free_disk_ != 0 ? backend_->free_disk() : std::nullopt;
      disk_free_ = free_after_flush(free, memtables);
      const auto used = max_disk_ != 0 ? backend_->disk_bytes() : std::nullopt;
      disk_used_ = used ? *used + memtables : 0;
    }
    const bool low = min_free_disk_ != 0 && disk_free_ < min_free_disk_ + length;
    over_max_disk_ = max_disk_ != 0 && disk_used_ + length > max_disk_;
    if (over_max_disk_) {
      compact_for_max_disk_locked(raw);
    } else {
      compaction_asked_ = false;
    }
    disk_full_ = low || over_max_disk_;
    return !disk_full_;
  }

  // The store's files reach max_disk_: a compaction returns the space of evicted and replaced
  // chunks. When the one asked before has finished, nothing was deleted since it started, and
  // the files are still too large, the live chunks themselves are: the least recently used
  // go (never `raw`, being stored) until what stays would take 7/8 of max_disk_ in files as
  // large, per chunk byte, as now — an eighth at least — and the next compaction returns
  // their space. Storing waits meanwhile.
  void compact_for_max_disk_locked(const std::string& raw) {
    if (backend_->compacting()) return;
    if (compaction_asked_ && used_ >= used_at_compaction_ && disk_used_ > 0) {
      const double keep = static_cast<double>(used_) * 0.875 * static_cast<double>(max_disk_) /
                          static_cast<double>(disk_used_);
      const std::uint64_t target = std::min(used_ - used_ / 8, static_cast<std::uint64_t>(keep));
      evict_locked(target, pinned_ ? &pinned_ : nullptr, &raw);
    }
    compaction_asked_ = backend_->compact();
    if (compaction_asked_) {
      ++disk_compactions_;
      used_at_compaction_ = used_;
    }
  }

  void set_clean_locked(entry& e) {
    // Its record is about to be written in full; it stays in dirty_ until the next flush,
    // which then skips it.
    e.dirty = false;
  }

  // Records an access. A touch that fills the batch of dirty records writes them (disk I/O):
  // without `may_flush` it is not done and false is returned.
  bool touch_locked(const oci::digest& d, bool may_flush) {
    auto it = blobs_.find(d.raw());
    if (it == blobs_.end()) return true;
    entry& e = it->second;
    if (!may_flush && dirty_.size() + (e.dirty ? 0 : 1) >= touch_flush_threshold) return false;
    e.record.hits += 1;
    e.record.last_access = clock_();
    lru_.bump(it->first);
    if (!e.dirty) {
      e.dirty = true;
      dirty_.push_back(it->first);
    }
    if (dirty_.size() >= touch_flush_threshold) {
      // A failed flush keeps the records dirty: the next one retries.
      (void)flush_touches_locked();
    }
    return true;
  }

  status flush_touches_locked() {
    if (dirty_.empty()) return status::success();
    auto batch = backend_->make_batch();
    bool any = false;
    for (const std::string& raw : dirty_) {
      auto it = blobs_.find(raw);
      if (it == blobs_.end() || !it->second.dirty) continue;
      batch->put(family::blobs, raw, encode_blob(it->second.record));
      any = true;
    }
    if (any) {
      if (status s = backend_->write(*batch); !s.ok()) return s;
    }
    for (const std::string& raw : dirty_) {
      if (auto it = blobs_.find(raw); it != blobs_.end()) it->second.dirty = false;
    }
    dirty_.clear();
    return status::success();
  }

  status erase_locked(entry_map::iterator it) {
    const std::string& raw = it->first;
    const std::uint64_t freed = it->second.record.stored_bytes;
    const std::string begin = chunk_key(raw, 0);
    const std::string end = chunk_range_end(raw);
    auto batch = backend_->make_batch();
    batch->erase_range(family::chunks, begin, end);
    batch->erase(family::blobs, raw);
    for (std::uint32_t seg = 0; seg < it->second.present.segment_count(); ++seg) {
      batch->erase(family::blobs, presence_key(raw, seg));
    }
    batch->put(family::meta, used_bytes_key, encode_u64(used_ - freed));
    if (status s = backend_->write(*batch); !s.ok()) return s;
    backend_->reclaim(family::chunks, begin, end);
    used_ -= freed;
    lru_.erase(raw);
    blobs_.erase(it);
    return status::success();
  }

  // Removes the chunks of `it` that no range of `hot` touches; returns the bytes freed (0 on a
  // write failure). The blob stays, no longer verified (it is not whole).
  std::uint64_t trim_locked(entry_map::iterator it, const byte_ranges& hot) {
    const std::string& raw = it->first;
    blob_record r = it->second.record;
    chunk_presence present = it->second.present;
    if (r.chunk_size == 0 || r.size == 0) return 0;
    const std::uint64_t cs = r.chunk_size;
    std::vector<bool> keep(r.chunk_count(), false);
    for (const oci::byte_interval& named : hot) {
      const oci::byte_interval bytes = named.intersect({0, r.size});
      if (bytes.empty()) continue;
      for (std::uint64_t c = bytes.begin / cs; c <= (bytes.end - 1) / cs; ++c) keep[c] = true;
    }
    auto batch = backend_->make_batch();
    std::uint64_t freed = 0;
    std::vector<bool> changed(present.segment_count(), false);
    for (const std::uint32_t index : it->second.present.indexes()) {
      if (keep[index]) continue;
      batch->erase(family::chunks, chunk_key(raw, index));
      present.set(index, false);
      changed[chunk_presence::segment_of(index)] = true;
      freed += r.chunk_length(index);
    }
    if (freed == 0) return 0;
    for (std::uint32_t seg = 0; seg < changed.size(); ++seg) {
      if (changed[seg]) batch->put(family::blobs, presence_key(raw, seg), present.segment(seg));
    }
    r.stored_bytes -= std::min(freed, r.stored_bytes);
    r.verified = false;
    batch->put(family::blobs, raw, encode_blob(r));
    batch->put(family::meta, used_bytes_key, encode_u64(used_ - freed));
    if (!backend_->write(*batch).ok()) return 0;
    used_ -= freed;
    it->second.record = r;
    it->second.present = std::move(present);
    evicted_bytes_ += freed;
    return freed;
  }

  // Least recently used first: cold blobs; then the cold chunks of hot blobs; then hot blobs.
  // Skips `spare` and what `pinned` names. Stops at the first write failure (the disk is in
  // trouble; put_chunk then reports no_space).
  std::uint64_t evict_locked(std::uint64_t target,
                             const std::function<bool(const oci::digest&)>* pinned,
                             const std::string* spare) {
    std::uint64_t evicted = 0;
    std::unordered_map<std::string, byte_ranges> hot;  // asked once per blob
    auto hot_of = [&](const entry& e, const std::string& raw) -> const byte_ranges& {
      auto [h, inserted] = hot.try_emplace(raw);
      if (inserted && hot_) h->second = hot_(e.digest);
      return h->second;
    };
    bool failed = false;
    for (int pass = hot_ ? 0 : 2; pass < 3 && used_ > target && !failed; ++pass) {
      // erase_locked() removes the blob visited from lru_, which allows it.
      lru_.visit_least_recent([&](const std::string& raw) {
        if (used_ <= target) return false;
        auto it = blobs_.find(raw);
        if (it == blobs_.end() || (spare != nullptr && it->first == *spare) ||
            (pinned != nullptr && (*pinned)(it->second.digest))) {
          return true;
        }
        const bool is_hot = pass < 2 && !hot_of(it->second, it->first).empty();
        if (pass == 0 && is_hot) return true;
        if (pass == 1) {
          if (is_hot) evicted += trim_locked(it, hot_of(it->second, it->first));
          return true;
        }
        const std::uint64_t bytes = it->second.record.stored_bytes;
        if (!erase_locked(it).ok()) {
          failed = true;
          return false;
        }
        evicted += bytes;
        ++evicted_blobs_;
        evicted_bytes_ += bytes;
        return true;
      });
    }
    return evicted;
  }

  // Called after a failed checksum. Under the lock, reads again (another thread may have
  // replaced the chunk meanwhile) and removes the chunk if it is still bad.
  status remove_corrupt_chunk(const oci::digest& d, const std::string& raw, const std::string& key,
                              std::uint32_t index, std::string& out) {
    std::lock_guard lock(mu_);
    bool corrupt = false;
    status s = backend_->read(family::chunks, key, [&](std::string_view value) {
      if (auto bytes = checked_bytes(value)) {
        out.assign(bytes->data(), bytes->size());
      } else {
        corrupt = true;
      }
    });
    if (!s.ok())
      return s.code == errc::not_found
                 ? status::corruption(d.str() + ": chunk " + std::to_string(index) + " was corrupt")
                 : s;
    if (!corrupt) return status::success();

    memory_.drop(key);
    auto batch = backend_->make_batch();
    batch->erase(family::chunks, key);
    auto it = blobs_.find(raw);
    blob_record r;
    std::uint64_t freed = 0;
    // Counted only if the record's presence has it (a chunk no record counts is only erased).
    const bool counted = it != blobs_.end() && it->second.present.test(index);
    if (counted) {
      r = it->second.record;
      freed = std::min<std::uint64_t>(r.chunk_length(index), r.stored_bytes);
      r.stored_bytes -= freed;
      r.verified = false;
      batch->put(family::blobs, raw, encode_blob(r));
      batch->put(family::blobs, presence_key(raw, chunk_presence::segment_of(index)),
                 it->second.present.segment_with(index, false));
      batch->put(family::meta, used_bytes_key, encode_u64(used_ - freed));
    }
    const std::string what =
        d.str() + ": chunk " + std::to_string(index) + " failed its checksum and was removed";
    if (status w = backend_->write(*batch); !w.ok()) {
      return status::corruption(what + " (removing it failed: " + w.message + ")");
    }
    if (counted) {
      used_ -= freed;
      set_clean_locked(it->second);
      it->second.record = r;
      it->second.present.set(index, false);
    }
    ++corrupt_chunks_;
    return status::corruption(what);
  }

  std::unique_ptr<backend> backend_;
  std::atomic<std::uint64_t> capacity_;
  std::uint64_t evicted_blobs_ = 0;  // guarded by mu_, like the counters below
  std::uint64_t evicted_bytes_ = 0;
  std::uint64_t corrupt_chunks_ = 0;
  // Eviction queries, asked under mu_ (why, and their rules: chunk_store.hpp).
  std::function<bool(const oci::digest&)> pinned_;      // spared by put_chunk's eviction
  std::function<byte_ranges(const oci::digest&)> hot_;  // evicted after every cold blob
  const clock_fn clock_;

  std::mutex mu_;                   // guards everything below and serializes writers
  entry_map blobs_;                 // raw digest → record
  blob_lru lru_;                    // the blobs_ keys, least recent first
  std::vector<std::string> dirty_;  // raw digests touched since the last flush
  std::uint64_t used_ = 0;
  memory_chunks memory_;  // has its own lock; taken after mu_ or alone, never before it
  const std::uint64_t min_free_disk_;
  const std::uint64_t max_disk_;
  std::chrono::steady_clock::time_point disk_checked_{};  // guarded by mu_, like the rest
  std::uint64_t disk_free_ = 0;
  std::uint64_t disk_used_ = 0;  // the store's files, as last read (max_disk_ set)
  bool over_max_disk_ = false;
  bool compaction_asked_ = false;  // by compact_for_max_disk_locked, since the files were within
  std::uint64_t used_at_compaction_ = 0;  // used_ when it was asked
  bool disk_full_ = false;
  std::uint64_t disk_refusals_ = 0;
  std::uint64_t disk_compactions_ = 0;  // started for max_disk_
};

}  // namespace

std::unique_ptr<chunk_store> make_store(std::unique_ptr<backend> b, std::uint64_t capacity,
                                        clock_fn clock, std::uint64_t memory_cache,
                                        std::uint64_t min_free_disk, std::uint64_t max_disk) {
  return std::make_unique<store>(std::move(b), capacity, std::move(clock), memory_cache,
                                 min_free_disk, max_disk);
}

}  // namespace detail

std::unique_ptr<chunk_store> open_rocksdb_store(const store_options& options) {
  return detail::make_store(detail::open_rocksdb_backend(options), options.capacity, options.clock,
                            options.memory_cache, options.min_free_disk, options.max_disk);
}

std::unique_ptr<chunk_store> make_memory_store(std::uint64_t capacity, clock_fn clock,
                                               std::uint64_t memory_cache) {
  return detail::make_store(detail::make_memory_backend(), capacity, std::move(clock),
                            memory_cache);
}

}  // namespace layercache::cache
