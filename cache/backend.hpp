// The key-value layer under the chunk store. Internal to cache/: the store logic (records,
// accounting, eviction) is written once against this interface, and each backend (RocksDB,
// memory) only stores bytes. rocksdb::Status never crosses it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cache/chunk_store.hpp"

namespace layercache::cache::detail {

// One RocksDB column family each; keys and values are described in records.hpp.
enum class family : std::uint8_t { chunks, blobs, manifests, tags, meta };
inline constexpr std::size_t family_count = 5;

// Operations applied together by backend::write(), all or none.
class write_batch {
 public:
  virtual ~write_batch() = default;
  // value = head + tail (two parts so a checksum can be prefixed without copying the bytes).
  virtual void put(family f, std::string_view key, std::string_view head,
                   std::string_view tail = {}) = 0;
  virtual void erase(family f, std::string_view key) = 0;
  // Keys in [begin, end).
  virtual void erase_range(family f, std::string_view begin, std::string_view end) = 0;
};

// Thread-safe.
class backend {
 public:
  virtual ~backend() = default;

  [[nodiscard]] virtual std::unique_ptr<write_batch> make_batch() = 0;
  virtual status write(write_batch& batch) = 0;

  // Calls `on_value` with the value of `key` (valid only during the call); not_found when absent.
  virtual status read(family f, std::string_view key,
                      const std::function<void(std::string_view)>& on_value) = 0;

  // The value of `key`, valid while `owner` is held — the backend's own buffer where it has
  // one (a RocksDB block, pinned), so nothing is copied. The backend's block checksums are
  // skipped: only for values that carry their own (chunks). not_found when absent.
  virtual status read_shared(family f, std::string_view key, std::shared_ptr<const void>& owner,
                             std::string_view& value) = 0;

  // What a scan hands out: keys and values; keys only (the value is empty); or keys only with
  // the backend's block checksums skipped, where a key read wrong costs nothing worse than a
  // refetch (chunk presence: a chunk's block is its value, so checking it doubles the cost).
  enum class scan_mode { entries, keys, keys_unchecked };

  // Calls `on_entry` for each key starting with `prefix`, ascending, until it returns false.
  virtual status scan(
      family f, std::string_view prefix, scan_mode mode,
      const std::function<bool(std::string_view key, std::string_view value)>& on_entry) = 0;

  // A hint that [begin, end) was just deleted and its space should be reclaimed soon.
  virtual void reclaim(family f, std::string_view begin, std::string_view end) = 0;

  // Asks for what was written so far to become durable soon (without waiting for it). A
  // backend whose writes are durable when write() returns does nothing.
  virtual void persist() = 0;

  // Bytes held by the backend's block cache (0 when it has none).
  [[nodiscard]] virtual std::uint64_t block_cache_bytes() = 0;

  // Bytes of writes held in memory until they are flushed to files (0 when none).
  [[nodiscard]] virtual std::uint64_t write_buffer_bytes() = 0;

  // Whether writes are refused since one failed (a full disk): write() then answers no_space
  // without touching the disk until there is room again, when it resumes by itself.
  [[nodiscard]] virtual bool writes_stopped() = 0;

  // Free bytes on the disk under the store; nullopt when it has none (in memory).
  [[nodiscard]] virtual std::optional<std::uint64_t> free_disk() = 0;

  // Bytes the store's files take on the disk (the blocks allocated to every file under its
  // directory); nullopt when it has none (in memory).
  [[nodiscard]] virtual std::optional<std::uint64_t> disk_bytes() = 0;

  // Starts rewriting the store's files so that the space of deleted data returns to the disk,
  // and returns at once. false, doing nothing, while one still runs, after a failed write, or
  // for a backend with no files.
  virtual bool compact() = 0;

  // Whether the last compact() is still running.
  [[nodiscard]] virtual bool compacting() = 0;
};

[[nodiscard]] std::unique_ptr<backend> make_memory_backend();

// Throws std::runtime_error when the database cannot be opened.
[[nodiscard]] std::unique_ptr<backend> open_rocksdb_backend(const store_options& options);

// A chunk_store over `b`. Reads the blob records and the used-bytes counter (repairing the
// counter when missing or wrong); throws std::runtime_error when they cannot be read.
[[nodiscard]] std::unique_ptr<chunk_store> make_store(std::unique_ptr<backend> b,
                                                      std::uint64_t capacity, clock_fn clock,
                                                      std::uint64_t memory_cache = 0,
                                                      std::uint64_t min_free_disk = 0,
                                                      std::uint64_t max_disk = 0);

}  // namespace layercache::cache::detail
