// The store's memory cache: chunks read from the store, checked and decoded, shared with
// readers. Internal to cache/. Two kinds:
// - kept: an LRU bounded in bytes (cache.memory_cache). A chunk read in part (random ranges,
//   lazy pulls) is admitted at once; one read whole (pulls) at its second read: the first
//   leaves its key in a list of recent whole reads (twice the capacity's worth of bytes,
//   oldest out first). An image pulled again is served from memory, while one pull of an
//   image bigger than that passes through without flushing what is kept;
// - live: every chunk some reader still holds, whatever the capacity (weak references: they
//   cost no memory of their own). A reader that asks for a chunk another one is sending gets
//   the same bytes, with no store read and no second checksum — a herd, or pulls of one image
//   side by side, read each chunk from the store about once.
// Thread-safe, with a lock of its own: the store takes it after its own lock or alone, never
// before it. Keys are chunk keys (raw digest + index), so a blob's entries share a prefix.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "cache/chunk_store.hpp"

namespace layercache::cache::detail {

class memory_chunks {
 public:
  explicit memory_chunks(std::uint64_t capacity) : capacity_(capacity) {}

  // `count_miss`: false for a look that a store read follows when it misses (counted there).
  shared_chunk find(const std::string& key, bool count_miss = true);

  // A chunk just read and checked: live while a reader holds it; kept too when `partial`
  // (read in part) or read whole before, recently.
  void add(const std::string& key, const shared_chunk& bytes, bool partial,
           std::uint64_t generation);

  // The generation to pass to add(): bytes read after this call may be added unless a
  // drop happened since (it could be dropping exactly what was being read).
  [[nodiscard]] std::uint64_t generation() const { return generation_.load(); }

  // Drops every chunk whose key starts with `prefix` (a raw digest, or one chunk's key).
  void drop(const std::string& prefix);

  // Its memory_* figures.
  void fill(store_stats& s);

 private:
  struct item {
    std::string key;
    shared_chunk bytes;
  };
  struct seen_item {
    std::string key;
    std::size_t size;
  };
  static constexpr std::size_t min_sweep = 1024;  // live entries before expired ones are swept

  // Evicted chunks go to `gone`, released by the caller after the lock (a pinned RocksDB
  // block goes back to its cache then): I/O threads look here and must not wait for that.
  void insert_locked(const std::string& key, const shared_chunk& bytes, std::list<item>& gone);
  // Whether `key` was read whole recently: true (and forgotten) if so; else remembered.
  bool seen_before_locked(const std::string& key, std::size_t size);

  const std::uint64_t capacity_;
  std::mutex mu_;
  std::list<seen_item> seen_order_;  // keys of chunks read whole once, oldest first
  std::unordered_map<std::string, std::list<seen_item>::iterator> seen_;
  std::uint64_t seen_bytes_ = 0;  // the bytes those reads were
  std::list<item> order_;         // most recently used first
  std::unordered_map<std::string, std::list<item>::iterator> index_;
  std::unordered_map<std::string, std::weak_ptr<const chunk_bytes>> live_;
  std::size_t sweep_at_ = min_sweep;
  std::uint64_t used_ = 0;
  std::uint64_t hits_ = 0;    // from the kept chunks
  std::uint64_t shared_ = 0;  // from the live ones
  std::uint64_t misses_ = 0;
  std::atomic<std::uint64_t> generation_{0};
};

}  // namespace layercache::cache::detail
