#include "cache/profile.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <set>
#include <utility>

namespace layercache::cache {
namespace {

using key = std::pair<std::string, std::uint64_t>;  // (digest text, offset)

void order(std::vector<profile_entry>& entries) {
  std::sort(entries.begin(), entries.end(), [](const profile_entry& a, const profile_entry& b) {
    if (a.seen != b.seen) return a.seen > b.seen;
    if (a.at_ms != b.at_ms) return a.at_ms < b.at_ms;
    if (a.blob != b.blob) return a.blob.str() < b.blob.str();
    return a.bytes.begin < b.bytes.begin;
  });
  if (entries.size() > max_profile_entries) {
    entries.erase(entries.begin() + max_profile_entries, entries.end());
  }
}

std::optional<std::uint64_t> as_u64(const boost::json::value* v) {
  if (v == nullptr) return std::nullopt;
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<std::uint64_t>(v->as_int64());
  return std::nullopt;
}

}  // namespace

profile merge_run(std::optional<profile> base, const oci::digest& manifest,
                  const std::vector<touch>& run) {
  profile out{manifest, 0, {}};
  std::map<key, std::size_t> index;
  if (base && base->manifest == manifest) {
    out.runs = base->runs;
    out.entries = std::move(base->entries);
    out.tags = std::move(base->tags);
    for (std::size_t i = 0; i < out.entries.size(); ++i) {
      index.emplace(key{out.entries[i].blob.str(), out.entries[i].bytes.begin}, i);
    }
  }
  std::set<key> in_run;
  for (const auto& t : run) {
    if (t.bytes.empty()) continue;
    key k{t.blob.str(), t.bytes.begin};
    auto it = index.find(k);
    if (!in_run.insert(k).second) {  // the first touch's time counts; the longest length
      auto& e = out.entries[it->second];
      e.bytes.end = std::max(e.bytes.end, t.bytes.end);  // both begin at k's offset
      continue;
    }
    if (it == index.end()) {
      index.emplace(k, out.entries.size());
      out.entries.push_back(profile_entry{t.blob, t.bytes, 1, t.at_ms});
      continue;
    }
    auto& e = out.entries[it->second];
    const std::uint64_t total = std::uint64_t{e.at_ms} * e.seen + t.at_ms;
    ++e.seen;
    e.at_ms = static_cast<std::uint32_t>(total / e.seen);
    e.bytes.end = std::max(e.bytes.end, t.bytes.end);
  }
  ++out.runs;
  order(out.entries);
  return out;
}

void add_tag(profile& p, profile_tag t) {
  std::erase(p.tags, t);
  p.tags.insert(p.tags.begin(), std::move(t));
  if (p.tags.size() > max_profile_tags) p.tags.resize(max_profile_tags);
}

std::string to_json(const profile& p) {
  boost::json::array entries;
  entries.reserve(p.entries.size());
  for (const auto& e : p.entries) {
    entries.push_back(boost::json::object{{"blob", e.blob.str()},
                                          {"offset", e.bytes.begin},
                                          {"length", e.bytes.length()},
                                          {"seen", e.seen},
                                          {"at_ms", e.at_ms}});
  }
  boost::json::object doc{
      {"version", 1}, {"manifest", p.manifest.str()}, {"runs", p.runs}, {"entries", entries}};
  if (!p.tags.empty()) {
    boost::json::array tags;
    for (const auto& t : p.tags) {
      tags.push_back(boost::json::object{
          {"upstream", t.upstream}, {"repository", t.repository}, {"tag", t.tag}});
    }
    doc["tags"] = std::move(tags);
  }
  return boost::json::serialize(doc);
}

namespace {

// A tag field: 1..255 bytes, no control characters (tag record keys are '\n'-separated).
std::optional<std::string> tag_field(const boost::json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  std::string s(v->as_string());
  if (s.empty() || s.size() > 255) return std::nullopt;
  for (const unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return std::nullopt;
  }
  return s;
}

// "tags" of a profile document (absent: none); false when malformed.
bool read_tags(const boost::json::value* v, std::vector<profile_tag>& out) {
  if (v == nullptr) return true;
  if (!v->is_array() || v->as_array().size() > max_profile_tags) return false;
  for (const auto& item : v->as_array()) {
    if (!item.is_object()) return false;
    const auto& o = item.as_object();
    auto upstream = tag_field(o, "upstream");
    auto repository = tag_field(o, "repository");
    auto tag = tag_field(o, "tag");
    if (!upstream || !repository || !tag) return false;
    out.push_back(profile_tag{std::move(*upstream), std::move(*repository), std::move(*tag)});
  }
  return true;
}

}  // namespace

std::optional<profile> profile_from_json(std::string_view json) {
  boost::system::error_code ec;
  const auto v = boost::json::parse(json, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  if (as_u64(o.if_contains("version")) != 1u) return std::nullopt;
  const auto* m = o.if_contains("manifest");
  if (m == nullptr || !m->is_string()) return std::nullopt;
  auto manifest = oci::digest::parse(m->as_string());
  const auto runs = as_u64(o.if_contains("runs"));
  const auto* entries = o.if_contains("entries");
  if (!manifest || !runs || *runs == 0 || *runs > UINT32_MAX || entries == nullptr ||
      !entries->is_array() || entries->as_array().size() > max_profile_entries) {
    return std::nullopt;
  }
  profile p{*manifest, static_cast<std::uint32_t>(*runs), {}};
  std::set<key> seen_keys;
  for (const auto& item : entries->as_array()) {
    if (!item.is_object()) return std::nullopt;
    const auto& e = item.as_object();
    const auto* b = e.if_contains("blob");
    if (b == nullptr || !b->is_string()) return std::nullopt;
    auto blob = oci::digest::parse(b->as_string());
    const auto offset = as_u64(e.if_contains("offset"));
    const auto length = as_u64(e.if_contains("length"));
    const auto seen = as_u64(e.if_contains("seen"));
    const auto at = as_u64(e.if_contains("at_ms"));
    if (!blob || !offset || !length || *length == 0 || !seen || *seen == 0 || *seen > p.runs ||
        !at || *at > UINT32_MAX || *offset > (1ULL << 62) || *length > (1ULL << 40)) {
      return std::nullopt;
    }
    if (!seen_keys.insert(key{blob->str(), *offset}).second) return std::nullopt;
    // No overflow: offset <= 2^62, length <= 2^40.
    p.entries.push_back(profile_entry{std::move(*blob), oci::byte_interval::at(*offset, *length),
                                      static_cast<std::uint32_t>(*seen),
                                      static_cast<std::uint32_t>(*at)});
  }
  order(p.entries);
  if (!read_tags(o.if_contains("tags"), p.tags)) return std::nullopt;
  return p;
}

}  // namespace layercache::cache
