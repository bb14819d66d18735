#include "cache/lru.hpp"

namespace layercache::cache::detail {

void blob_lru::bump(const std::string& raw) {
  auto [it, inserted] = ticks_.try_emplace(raw, 0);
  if (!inserted) order_.erase(it->second);
  it->second = ++last_tick_;
  order_.emplace(it->second, raw);
}

void blob_lru::erase(const std::string& raw) {
  auto it = ticks_.find(raw);
  if (it == ticks_.end()) return;
  order_.erase(it->second);
  ticks_.erase(it);
}

void blob_lru::visit_least_recent(const std::function<bool(const std::string& raw)>& visit) {
  for (auto it = order_.begin(); it != order_.end();) {
    const std::string& raw = (it++)->second;  // past it first: visit may erase it
    if (!visit(raw)) return;
  }
}

void blob_lru::visit_most_recent(const std::function<void(const std::string& raw)>& visit) const {
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) visit(it->second);
}

}  // namespace layercache::cache::detail
