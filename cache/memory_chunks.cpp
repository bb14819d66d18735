#include "cache/memory_chunks.hpp"

#include <algorithm>
#include <iterator>

namespace layercache::cache::detail {

shared_chunk memory_chunks::find(const std::string& key, bool count_miss) {
  std::lock_guard lock(mu_);
  auto it = index_.find(key);
  if (it != index_.end()) {
    order_.splice(order_.begin(), order_, it->second);
    ++hits_;
    return it->second->bytes;
  }
  if (auto l = live_.find(key); l != live_.end()) {
    if (auto bytes = l->second.lock()) {
      ++shared_;
      return bytes;
    }
  }
  if (count_miss) ++misses_;
  return nullptr;
}

void memory_chunks::add(const std::string& key, const shared_chunk& bytes, bool partial,
                        std::uint64_t generation) {
  std::list<item> gone;  // evicted by insert_locked(), released after the lock
  std::lock_guard lock(mu_);
  if (generation != generation_.load()) return;
  live_[key] = bytes;
  if (live_.size() >= sweep_at_) {
    std::erase_if(live_, [](const auto& e) { return e.second.expired(); });
    sweep_at_ = std::max<std::size_t>(min_sweep, 2 * live_.size());
  }
  if (capacity_ == 0) return;
  if (partial || seen_before_locked(key, bytes->size())) insert_locked(key, bytes, gone);
}

void memory_chunks::drop(const std::string& prefix) {
  std::list<item> gone;  // released after the lock, as in add()
  std::lock_guard lock(mu_);
  ++generation_;
  std::erase_if(live_, [&](const auto& e) { return e.first.starts_with(prefix); });
  for (auto it = seen_order_.begin(); it != seen_order_.end();) {
    if (it->key.starts_with(prefix)) {
      seen_bytes_ -= it->size;
      seen_.erase(it->key);
      it = seen_order_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = order_.begin(); it != order_.end();) {
    if (it->key.starts_with(prefix)) {
      used_ -= it->bytes->size();
      index_.erase(it->key);
      gone.splice(gone.end(), order_, it++);
    } else {
      ++it;
    }
  }
}

void memory_chunks::fill(store_stats& s) {
  std::lock_guard lock(mu_);
  s.memory_bytes = used_;
  s.memory_hits = hits_;
  s.memory_shared = shared_;
  s.memory_misses = misses_;
}

void memory_chunks::insert_locked(const std::string& key, const shared_chunk& bytes,
                                  std::list<item>& gone) {
  if (bytes->size() > capacity_ || index_.contains(key)) return;
  order_.push_front(item{key, bytes});
  index_.emplace(key, order_.begin());
  used_ += order_.front().bytes->size();
  while (used_ > capacity_) {
    used_ -= order_.back().bytes->size();
    index_.erase(order_.back().key);
    gone.splice(gone.end(), order_, std::prev(order_.end()));
  }
}

bool memory_chunks::seen_before_locked(const std::string& key, std::size_t size) {
  if (auto it = seen_.find(key); it != seen_.end()) {
    seen_bytes_ -= it->second->size;
    seen_order_.erase(it->second);
    seen_.erase(it);
    return true;
  }
  if (index_.contains(key)) return false;
  seen_order_.push_back(seen_item{key, size});
  seen_.emplace(key, std::prev(seen_order_.end()));
  seen_bytes_ += size;
  while (seen_bytes_ > 2 * capacity_) {
    seen_bytes_ -= seen_order_.front().size;
    seen_.erase(seen_order_.front().key);
    seen_order_.pop_front();
  }
  return false;
}

}  // namespace layercache::cache::detail
