#include <array>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <variant>
#include <vector>

#include "cache/backend.hpp"

namespace layercache::cache::detail {
namespace {

struct put_op {
  family f;
  std::string key;
  std::string value;
};
struct erase_op {
  family f;
  std::string key;
};
struct erase_range_op {
  family f;
  std::string begin;
  std::string end;
};

class memory_batch final : public write_batch {
 public:
  void put(family f, std::string_view key, std::string_view head, std::string_view tail) override {
    std::string value;
    value.reserve(head.size() + tail.size());
    value.append(head).append(tail);
    ops_.emplace_back(put_op{f, std::string(key), std::move(value)});
  }
  void erase(family f, std::string_view key) override {
    ops_.emplace_back(erase_op{f, std::string(key)});
  }
  void erase_range(family f, std::string_view begin, std::string_view end) override {
    ops_.emplace_back(erase_range_op{f, std::string(begin), std::string(end)});
  }

  std::vector<std::variant<put_op, erase_op, erase_range_op>> ops_;
};

class memory_backend final : public backend {
 public:
  std::unique_ptr<write_batch> make_batch() override { return std::make_unique<memory_batch>(); }

  status write(write_batch& batch) override {
    auto& ops = static_cast<memory_batch&>(batch).ops_;
    std::unique_lock lock(mu_);
    for (auto& op : ops) {
      if (auto* put = std::get_if<put_op>(&op)) {
        table(put->f).insert_or_assign(std::move(put->key), std::move(put->value));
      } else if (auto* erase = std::get_if<erase_op>(&op)) {
        table(erase->f).erase(erase->key);
      } else {
        auto& range = std::get<erase_range_op>(op);
        auto& t = table(range.f);
        t.erase(t.lower_bound(range.begin), t.lower_bound(range.end));
      }
    }
    ops.clear();
    return status::success();
  }

  status read(family f, std::string_view key,
              const std::function<void(std::string_view)>& on_value) override {
    std::shared_lock lock(mu_);
    auto& t = table(f);
    auto it = t.find(key);
    if (it == t.end()) return status::not_found("no such key");
    on_value(it->second);
    return status::success();
  }

  status read_shared(family f, std::string_view key, std::shared_ptr<const void>& owner,
                     std::string_view& value) override {
    std::shared_lock lock(mu_);
    auto& t = table(f);
    auto it = t.find(key);
    if (it == t.end()) return status::not_found("no such key");
    auto copy = std::make_shared<const std::string>(it->second);
    value = *copy;
    owner = std::move(copy);
    return status::success();
  }

  status scan(family f, std::string_view prefix, scan_mode mode,
              const std::function<bool(std::string_view, std::string_view)>& on_entry) override {
    std::shared_lock lock(mu_);
    auto& t = table(f);
    for (auto it = t.lower_bound(prefix); it != t.end() && it->first.starts_with(prefix); ++it) {
      if (!on_entry(it->first, mode != scan_mode::entries ? std::string_view{}
                                                          : std::string_view(it->second))) {
        break;
      }
    }
    return status::success();
  }

  void reclaim(family, std::string_view, std::string_view) override {}
  void persist() override {}
  bool writes_stopped() override { return false; }
  std::optional<std::uint64_t> free_disk() override { return std::nullopt; }
  std::optional<std::uint64_t> disk_bytes() override { return std::nullopt; }
  bool compact() override { return false; }
  bool compacting() override { return false; }
  std::uint64_t block_cache_bytes() override { return 0; }
  std::uint64_t write_buffer_bytes() override { return 0; }

 private:
  using map = std::map<std::string, std::string, std::less<>>;
  map& table(family f) { return tables_[static_cast<std::size_t>(f)]; }

  std::shared_mutex mu_;
  std::array<map, family_count> tables_;
};

}  // namespace

std::unique_ptr<backend> make_memory_backend() { return std::make_unique<memory_backend>(); }

}  // namespace layercache::cache::detail
