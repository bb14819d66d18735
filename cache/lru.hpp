// The recency order of the store's blobs, least recently used first: what eviction walks and
// list_blobs reports. Internal to cache/.
//
// Not thread-safe: the store owns one and uses it only under its own lock (store.cpp's mu_),
// the lock its eviction holds while it walks this order and asks the eviction queries
// (chunk_store.hpp, "Eviction queries"). The order is in memory only: the store rebuilds it at
// open from the records' last_access.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>

namespace layercache::cache::detail {

class blob_lru {
 public:
  // Makes `raw` (a raw digest) the most recently used, adding it when absent.
  void bump(const std::string& raw);
  // Forgets `raw`; nothing when absent.
  void erase(const std::string& raw);

  [[nodiscard]] bool contains(const std::string& raw) const { return ticks_.contains(raw); }
  [[nodiscard]] std::size_t size() const { return ticks_.size(); }

  // Calls `visit` with each raw digest, least recent first, until it returns false. `visit`
  // may erase() the digest it was given (then its argument no longer refers to anything), and
  // must not otherwise change the order.
  void visit_least_recent(const std::function<bool(const std::string& raw)>& visit);
  // Calls `visit` with each raw digest, most recent first.
  void visit_most_recent(const std::function<void(const std::string& raw)>& visit) const;

 private:
  std::map<std::uint64_t, std::string> order_;            // tick → raw, least recent first
  std::unordered_map<std::string, std::uint64_t> ticks_;  // raw → its tick in order_
  std::uint64_t last_tick_ = 0;                           // larger is more recent
};

}  // namespace layercache::cache::detail
