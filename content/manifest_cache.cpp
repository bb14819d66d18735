#include "content/manifest_cache.hpp"

#include <algorithm>
#include <chrono>
#include <vector>

#include "log/log.hpp"
#include "oci/media_types.hpp"

namespace layercache::content {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// "q=0", "q=0.0", "q=0.000" (RFC 9110 qvalue zero): the type is refused.
bool refused(std::string_view params) {
  std::size_t pos = 0;
  while (pos <= params.size()) {
    const auto end = std::min(params.find(';', pos), params.size());
    const std::string p = lower(trim(params.substr(pos, end - pos)));
    if (p.starts_with("q=")) {
      const std::string_view v = std::string_view(p).substr(2);
      return !v.empty() && v.find_first_not_of("0.") == std::string_view::npos;
    }
    pos = end + 1;
  }
  return false;
}

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string accept_class(std::string_view accept) {
  std::vector<std::string> types;
  std::size_t pos = 0;
  while (pos <= accept.size()) {
    const auto end = std::min(accept.find(',', pos), accept.size());
    const std::string_view item = accept.substr(pos, end - pos);
    pos = end + 1;
    const auto semi = item.find(';');
    const std::string_view type = trim(item.substr(0, semi));
    if (type.empty()) continue;
    if (semi != std::string_view::npos && refused(item.substr(semi + 1))) continue;
    types.push_back(lower(type));
  }
  std::sort(types.begin(), types.end());
  types.erase(std::unique(types.begin(), types.end()), types.end());
  std::string out;
  for (const auto& t : types) {
    if (!out.empty()) out += ',';
    out += t;
  }
  return out;
}

bool accepts(std::string_view accept_cls, std::string_view media_type) {
  const std::string type = lower(trim(media_type.substr(0, media_type.find(';'))));
  const std::string family = type.substr(0, type.find('/')) + "/*";
  std::size_t pos = 0;
  while (pos <= accept_cls.size()) {
    const auto end = std::min(accept_cls.find(',', pos), accept_cls.size());
    const std::string_view item = accept_cls.substr(pos, end - pos);
    pos = end + 1;
    if (item == type || item == "*/*" || item == family) return true;
  }
  return false;
}

const std::string& native_accept_class() {
  static const std::string cls = accept_class(oci::default_manifest_accept());
  return cls;
}

std::string tag_key(std::string_view upstream, std::string_view repository, std::string_view tag,
                    std::string_view accept_cls) {
  std::string key;
  key.reserve(upstream.size() + repository.size() + tag.size() + accept_cls.size() + 3);
  key += upstream;
  key += '\n';
  key += repository;
  key += '\n';
  key += tag;
  key += '\n';
  key += accept_cls;
  return key;
}

// The lambdas handed to pool_.run capture only references, which outlive the co_await: a
// lambda owning strings, built inside the co_await argument, was destroyed twice (g++ 12).

manifest_cache::manifest_cache(cache::chunk_store& store, blocking_pool& pool,
                               config::duration tag_ttl, config::duration max_stale)
    : store_(store), pool_(pool), tag_ttl_(tag_ttl), max_stale_(max_stale) {}

boost::asio::awaitable<std::optional<cache::stored_manifest>> manifest_cache::manifest(
    const oci::digest& d) {
  co_return co_await pool_.run([this, &d] { return store_.manifest(d); });
}

std::optional<cached_tag> manifest_cache::tag_now(const std::string& key) {
  auto record = store_.tag(key);
  if (!record) return std::nullopt;
  auto m = store_.manifest(record->digest);
  if (!m) return std::nullopt;
  return cached_tag{std::move(record->digest), record->fetched_at, std::move(*m)};
}

boost::asio::awaitable<std::optional<cached_tag>> manifest_cache::tag(const std::string& key) {
  co_return co_await pool_.run([this, &key] { return tag_now(key); });
}

boost::asio::awaitable<manifest_cache::tag_lookup> manifest_cache::lookup_tag(
    std::string_view upstream, std::string_view repository, std::string_view tag,
    const std::string& accept_cls) {
  const std::string own_key = tag_key(upstream, repository, tag, accept_cls);
  const std::string& native = native_accept_class();
  const std::string native_key =
      accept_cls == native ? std::string() : tag_key(upstream, repository, tag, native);
  co_return co_await pool_.run([this, &own_key, &native_key, &accept_cls, &native] {
    tag_lookup found;
    found.own = tag_now(own_key);
    if (found.own && !accepts(accept_cls, found.own->manifest.media_type)) found.own.reset();
    if (!found.own && !native_key.empty()) {
      found.native = tag_now(native_key);
      if (found.native && (!accepts(accept_cls, found.native->manifest.media_type) ||
                           !accepts(native, found.native->manifest.media_type))) {
        found.native.reset();
      }
    }
    return found;
  });
}

boost::asio::awaitable<void> manifest_cache::put(const oci::digest& d,
                                                 const std::string& media_type,
                                                 const std::string& bytes, const std::string& key) {
  std::vector<expected_tag> tags = take_expected(d, media_type);
  if (!key.empty()) tags.push_back(expected_tag{key, {}, now_seconds()});
  co_await pool_.run([this, &d, &media_type, &bytes, &tags] {
    if (auto s = store_.put_manifest(d, media_type, bytes); !s.ok()) {
      log::warn("cache", "storing manifest ", d.str(), ": ", s.message);
      return 0;
    }
    for (const auto& t : tags) {
      if (auto s = store_.put_tag(t.key, cache::tag_record{d, t.resolved_at}); !s.ok()) {
        log::warn("cache", "storing a tag record: ", s.message);
      }
    }
    return 0;
  });
}

void manifest_cache::expect(const std::string& key, const std::string& accept_cls,
                            const oci::digest& d) {
  constexpr std::size_t max_expected = 4096;
  std::lock_guard lock(expected_mutex_);
  if (expected_count_ >= max_expected) {  // clients that HEAD and never GET: start over
    expected_.clear();
    expected_count_ = 0;
  }
  auto& list = expected_[d.str()];
  std::erase_if(list, [&](const expected_tag& t) { return t.key == key; });
  list.push_back(expected_tag{key, accept_cls, now_seconds()});
  ++expected_count_;
}

std::vector<manifest_cache::expected_tag> manifest_cache::take_expected(
    const oci::digest& d, std::string_view media_type) {
  std::vector<expected_tag> out;
  std::lock_guard lock(expected_mutex_);
  auto it = expected_.find(d.str());
  if (it == expected_.end()) return out;
  expected_count_ -= std::min(expected_count_, it->second.size());
  for (auto& t : it->second) {
    if (fresh(t.resolved_at) && accepts(t.accept_cls, media_type)) out.push_back(std::move(t));
  }
  expected_.erase(it);
  return out;
}

boost::asio::awaitable<void> manifest_cache::confirm(const std::string& key, const oci::digest& d) {
  co_await pool_.run([this, &key, &d] {
    if (auto s = store_.put_tag(key, cache::tag_record{d, now_seconds()}); !s.ok()) {
      log::warn("cache", "storing a tag record: ", s.message);
    }
    return 0;
  });
}

std::int64_t manifest_cache::age(std::int64_t fetched_at) {
  return std::max<std::int64_t>(0, now_seconds() - fetched_at);
}

bool manifest_cache::fresh(std::int64_t fetched_at) const {
  return std::chrono::seconds(age(fetched_at)) < tag_ttl_.load();
}

bool manifest_cache::may_serve_stale(std::int64_t fetched_at) const {
  return std::chrono::seconds(age(fetched_at)) < max_stale_.load();
}

}  // namespace layercache::content
