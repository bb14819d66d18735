#include "loadtest/scenario.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "config/config.hpp"

namespace layercache::loadtest {
namespace {

bool is_digest(std::string_view s) {
  const auto colon = s.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= s.size()) return false;
  return std::all_of(s.begin() + static_cast<std::ptrdiff_t>(colon) + 1, s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::optional<std::uint64_t> parse_count(std::string_view s) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

int line_of(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  return mark.is_null() ? 0 : mark.line + 1;
}

// Collects every problem of a document before throwing them all at once.
class problems {
 public:
  void add(const std::string& path, int line, const std::string& message) {
    text_ += path + ": " + message;
    if (line > 0) text_ += " (line " + std::to_string(line) + ")";
    text_ += "\n";
  }
  void throw_if_any() const {
    if (!text_.empty()) throw std::runtime_error("scenario file:\n" + text_);
  }

 private:
  std::string text_;
};

// Typed access to a mapping's keys, reporting wrong types and unknown keys.
class fields {
 public:
  fields(problems& p, const YAML::Node& node, std::string path,
         std::initializer_list<std::string_view> known)
      : p_(p), node_(node), path_(std::move(path)) {
    if (!node.IsMap()) {
      p_.add(path_.empty() ? "(document)" : path_, line_of(node), "expected a mapping");
      return;
    }
    for (const auto& entry : node) {
      const auto key = entry.first.as<std::string>("");
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        p_.add(child(key), line_of(entry.first), "unknown key");
      }
    }
  }

  [[nodiscard]] bool has(const std::string& key) const { return node_.IsMap() && node_[key]; }
  [[nodiscard]] YAML::Node get(const std::string& key) const { return node_[key]; }
  [[nodiscard]] std::string child(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }

  void string(const std::string& key, std::string& out) const {
    if (!has(key)) return;
    const auto n = node_[key];
    if (!n.IsScalar()) return bad(key, "expected a string");
    out = n.Scalar();
  }
  template <class T>
  void count(const std::string& key, T& out, std::uint64_t min = 0) const {
    if (!has(key)) return;
    const auto n = node_[key];
    const auto v = n.IsScalar() ? parse_count(n.Scalar()) : std::nullopt;
    if (!v || *v < min || *v > std::numeric_limits<T>::max()) {
      return bad(key, "expected a whole number of at least " + std::to_string(min));
    }
    out = static_cast<T>(*v);
  }
  void size(const std::string& key, std::uint64_t& out) const {
    if (!has(key)) return;
    const auto n = node_[key];
    const auto v = n.IsScalar() ? config::parse_size(n.Scalar()) : std::nullopt;
    if (!v || *v == 0) return bad(key, "expected a size such as 64KiB");
    out = *v;
  }
  void seconds(const std::string& key, double& out) const {
    if (!has(key)) return;
    const auto n = node_[key];
    const auto v = n.IsScalar() ? config::parse_duration(n.Scalar()) : std::nullopt;
    if (!v || v->count() <= 0) return bad(key, "expected a duration such as 30s");
    out = std::chrono::duration<double>(*v).count();
  }
  void flag(const std::string& key, bool& out) const {
    if (!has(key)) return;
    const auto n = node_[key];
    if (!n.IsScalar() || (n.Scalar() != "true" && n.Scalar() != "false")) {
      return bad(key, "expected true or false");
    }
    out = n.Scalar() == "true";
  }
  void strings(const std::string& key, std::vector<std::string>& out) const {
    if (!has(key)) return;
    const auto n = node_[key];
    if (!n.IsSequence()) return bad(key, "expected a list of strings");
    for (const auto& item : n) {
      if (!item.IsScalar()) return bad(key, "expected a list of strings");
      out.push_back(item.Scalar());
    }
  }
  void bad(const std::string& key, const std::string& message) const {
    p_.add(child(key), line_of(node_[key]), message);
  }
  [[nodiscard]] int line() const { return line_of(node_); }

 private:
  problems& p_;
  YAML::Node node_;
  std::string path_;
};

scenario parse_scenario(problems& p, const YAML::Node& node, const std::string& path,
                        const std::filesystem::path& base_dir) {
  scenario s;
  const fields f(p, node, path,
                 {"name", "kind", "url", "size", "images", "blobs", "repo", "read_set", "count",
                  "concurrency", "parallel", "range", "align", "seed", "verify"});
  if (!node.IsMap()) return s;
  std::string kind;
  f.string("kind", kind);
  if (kind == "full") {
    s.kind = scenario_kind::full;
  } else if (kind == "ranges") {
    s.kind = scenario_kind::ranges;
  } else if (kind == "replay") {
    s.kind = scenario_kind::replay;
  } else {
    p.add(f.child("kind"), f.line(), "expected full, ranges or replay");
  }
  f.string("name", s.name);
  if (s.name.empty()) s.name = std::string(kind_name(s.kind));
  f.string("url", s.url);
  f.size("size", s.size);
  f.strings("images", s.images);
  std::vector<std::string> blobs;
  f.strings("blobs", blobs);
  for (const auto& b : blobs) {
    if (auto ref = parse_blob_ref(b)) {
      s.blobs.push_back(*ref);
    } else {
      f.bad("blobs", "expected repo@sha256:<hex>[:size], got " + b);
    }
  }
  for (const auto& image : s.images) {
    if (!split_image(image)) f.bad("images", "expected repo:tag or repo@digest, got " + image);
  }
  f.string("repo", s.repo);
  std::string read_set;
  f.string("read_set", read_set);
  if (s.kind == scenario_kind::replay) s.count = 0;  // every line unless told otherwise
  f.count("count", s.count);
  f.count("concurrency", s.concurrency, 1);
  f.count("parallel", s.parallel, 1);
  f.size("range", s.range);
  f.size("align", s.align);
  f.count("seed", s.seed);
  f.flag("verify", s.verify);
  if (!s.url.empty() && !parse_http_url(s.url)) f.bad("url", "expected http(s)://host[:port]/path");
  switch (s.kind) {
    case scenario_kind::full:
      if (s.url.empty() && s.images.empty()) p.add(path, f.line(), "full needs images or url");
      if (s.count == 0) f.bad("count", "full needs count of at least 1");
      break;
    case scenario_kind::ranges:
      if (s.url.empty() && s.images.empty() && s.blobs.empty()) {
        p.add(path, f.line(), "ranges needs images, blobs or url");
      }
      if (!s.url.empty() && s.size < s.range) f.bad("size", "ranges of a url need size >= range");
      if (s.count == 0) f.bad("count", "ranges needs count of at least 1");
      break;
    case scenario_kind::replay:
      if (s.repo.empty()) p.add(path, f.line(), "replay needs repo");
      if (read_set.empty()) {
        p.add(path, f.line(), "replay needs read_set");
      } else {
        try {
          const std::filesystem::path file(read_set);
          s.reads = load_read_set(file.is_absolute() ? file : base_dir / file);
          if (s.reads.empty()) f.bad("read_set", "the read set is empty");
        } catch (const std::exception& e) {
          f.bad("read_set", e.what());
        }
      }
      break;
  }
  return s;
}

}  // namespace

std::string_view kind_name(scenario_kind kind) {
  switch (kind) {
    case scenario_kind::full:
      return "full";
    case scenario_kind::ranges:
      return "ranges";
    case scenario_kind::replay:
      return "replay";
  }
  return "?";
}

plan parse_plan(std::string_view yaml, const std::filesystem::path& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    throw std::runtime_error("scenario file: " + std::string(e.what()));
  }
  problems p;
  plan out;
  const fields f(p, root, "",
                 {"registry", "max_time", "timeout", "ca_file", "insecure", "scenarios"});
  f.string("registry", out.registry);
  f.seconds("max_time", out.max_seconds);
  f.seconds("timeout", out.timeout_seconds);
  f.string("ca_file", out.ca_file);
  f.flag("insecure", out.insecure);
  if (!out.ca_file.empty() && out.insecure) {
    f.bad("insecure", "insecure and ca_file exclude each other");
  }
  if (!out.ca_file.empty() && std::filesystem::path(out.ca_file).is_relative()) {
    out.ca_file = (base_dir / out.ca_file).string();
  }
  if (!out.registry.empty() && !parse_http_url(out.registry)) {
    f.bad("registry", "expected http(s)://host[:port]");
  }
  const auto list = f.get("scenarios");
  if (!root.IsMap() || !list || !list.IsSequence() || list.size() == 0) {
    p.add("scenarios", f.line(), "expected a non-empty list of scenarios");
  } else {
    std::set<std::string> names;
    for (std::size_t i = 0; i < list.size(); ++i) {
      const auto path = "scenarios[" + std::to_string(i) + "]";
      out.scenarios.push_back(parse_scenario(p, list[i], path, base_dir));
      if (!names.insert(out.scenarios.back().name).second) {
        p.add(path + ".name", line_of(list[i]), "duplicate name " + out.scenarios.back().name);
      }
    }
  }
  p.throw_if_any();
  return out;
}

plan load_plan(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  return parse_plan(text.str(), file.parent_path());
}

std::vector<read_op> parse_read_set(std::string_view text) {
  std::vector<read_op> out;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const auto line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    std::istringstream fields_in{std::string(line)};
    std::string digest, offset, length, extra;
    fields_in >> digest;
    if (digest.empty() || digest[0] == '#') continue;
    fields_in >> offset >> length >> extra;
    const auto off = parse_count(offset);
    const auto len = parse_count(length);
    if (!is_digest(digest) || !off || !len || *len == 0 || !extra.empty()) {
      throw std::runtime_error("read set line " + std::to_string(line_no) +
                               ": expected <digest> <offset> <length>, got \"" + std::string(line) +
                               "\"");
    }
    out.push_back(read_op{digest, *off, *len});
  }
  return out;
}

std::vector<read_op> load_read_set(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  return parse_read_set(text.str());
}

std::optional<http_url> parse_http_url(std::string_view url) {
  constexpr std::string_view http = "http://";
  constexpr std::string_view https = "https://";
  http_url out;
  out.tls = url.substr(0, https.size()) == https;
  if (!out.tls && url.substr(0, http.size()) != http) return std::nullopt;
  const auto rest = url.substr(out.tls ? https.size() : http.size());
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  const auto colon = authority.rfind(':');
  if (colon == std::string_view::npos) {
    out.host = authority;
    out.port = out.tls ? "443" : "80";
  } else {
    out.host = authority.substr(0, colon);
    out.port = authority.substr(colon + 1);
  }
  if (out.host.empty() || out.port.empty()) return std::nullopt;
  return out;
}

std::optional<std::pair<std::string, std::string>> split_image(std::string_view ref) {
  std::string repo, reference;
  if (const auto at = ref.find('@'); at != std::string_view::npos) {
    repo = ref.substr(0, at);
    reference = ref.substr(at + 1);
    if (!is_digest(reference)) return std::nullopt;
  } else {
    const auto colon = ref.rfind(':');
    const auto slash = ref.rfind('/');
    if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
      repo = ref.substr(0, colon);
      reference = ref.substr(colon + 1);
    } else {
      repo = ref;
      reference = "latest";
    }
  }
  if (repo.empty() || reference.empty()) return std::nullopt;
  return std::make_pair(repo, reference);
}

std::optional<header_field> parse_header(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  const auto name = text.substr(0, colon);
  // RFC 9110 tchar.
  constexpr std::string_view tchar_punctuation = "!#$%&'*+-.^_`|~";
  const auto is_tchar = [&](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           tchar_punctuation.find(c) != std::string_view::npos;
  };
  if (!std::all_of(name.begin(), name.end(), is_tchar)) return std::nullopt;
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  });
  for (const std::string_view own :
       {"host", "range", "accept", "content-length", "transfer-encoding", "connection"}) {
    if (lower == own) return std::nullopt;
  }
  auto value = text.substr(colon + 1);
  const auto is_control = [](char c) {
    return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f;
  };
  if (std::any_of(value.begin(), value.end(), is_control)) return std::nullopt;
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  return header_field{std::string(name), std::string(value)};
}

std::optional<blob_ref> parse_blob_ref(std::string_view text) {
  const auto at = text.find('@');
  if (at == std::string_view::npos || at == 0) return std::nullopt;
  blob_ref out;
  out.repo = text.substr(0, at);
  std::string_view digest = text.substr(at + 1);
  // A size may follow the digest: "sha256:<hex>:<size>".
  const auto first = digest.find(':');
  if (const auto second = digest.find(':', first + 1); second != std::string_view::npos) {
    const auto size = config::parse_size(digest.substr(second + 1));
    if (!size) return std::nullopt;
    out.size = *size;
    digest = digest.substr(0, second);
  }
  if (!is_digest(digest)) return std::nullopt;
  out.digest = digest;
  return out;
}

}  // namespace layercache::loadtest
