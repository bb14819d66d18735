#include "daemon/node_setup.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>

namespace layercache::node_setup {
namespace {

std::string strip_slash(std::string_view s) {
  while (!s.empty() && s.back() == '/') s.remove_suffix(1);
  return std::string(s);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool docker_hub(std::string_view host) {
  return host == "docker.io" || host == "registry-1.docker.io" || host == "index.docker.io" ||
         host == "registry.hub.docker.com";
}

// As the docker reference grammar tells a registry from a repository's first component.
bool registry_like(std::string_view s) {
  return s.find('.') != std::string_view::npos || s.find(':') != std::string_view::npos ||
         s == "localhost";
}

void add_unique(std::vector<registry_host>& out, registry_host r) {
  for (const auto& have : out) {
    if (have.name == r.name) return;
  }
  out.push_back(std::move(r));
}

}  // namespace

std::string containerd_name(std::string_view host) {
  const std::string h = lower(host);
  return docker_hub(h) ? "docker.io" : h;
}

std::vector<registry_host> registry_hosts(const config::config& c) {
  std::vector<registry_host> out;
  for (const auto& u : c.upstreams) {
    const bool default_port =
        (u.scheme == "https" && u.port == 443) || (u.scheme == "http" && u.port == 80);
    const bool v6 = u.host.find(':') != std::string::npos;
    std::string authority = v6 ? "[" + u.host + "]" : u.host;
    if (!default_port) authority += ":" + std::to_string(u.port);
    add_unique(out, {containerd_name(authority), strip_slash(u.url), u.name});
    std::vector<std::string> names{u.name};
    names.insert(names.end(), u.aliases.begin(), u.aliases.end());
    for (const auto& n : names) {
      if (registry_like(n)) add_unique(out, {containerd_name(n), strip_slash(u.url), u.name});
    }
  }
  return out;
}

std::vector<registry_host> registry_hosts(const std::vector<std::string>& hosts) {
  std::vector<registry_host> out;
  for (const auto& h : hosts) {
    const std::string name = containerd_name(h);
    add_unique(
        out, {name, name == "docker.io" ? "https://registry-1.docker.io" : "https://" + name, {}});
  }
  return out;
}

std::string mirror_url(const config::config& c) {
  const auto& l = c.server.listen.at(0);
  std::string host = l.host;
  if (host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return (l.tls ? "https://" : "http://") + host + ":" + std::to_string(l.port);
}

std::optional<std::string> parse_mirror(std::string_view text) {
  std::string_view rest = text;
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
  } else {
    return std::nullopt;
  }
  while (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.empty()) return std::nullopt;
  for (const char c : rest) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' ||
                    c == ':' || c == '[' || c == ']' || c == '_';
    if (!ok) return std::nullopt;  // a path, query, user info, quotes
  }
  return strip_slash(text);
}

// ---- TOML, split into tables ---------------------------------------------------------------

namespace {

// A `key = value` (its value may span lines).
struct toml_entry {
  std::vector<std::string> key;  // dotted key, relative to its table
  std::size_t begin = 0;         // start of its first line
  std::size_t end = 0;           // after its last line's newline
};

// A table: its leading comment lines, its header line, its body up to the next one. The first
// block is the root table (no header).
struct toml_block {
  std::vector<std::string> header;
  bool array = false;         // [[array of tables]]
  std::size_t begin = 0;      // its comment lines directly above the header (or the header)
  std::size_t header_at = 0;  // the header line
  std::size_t body_at = 0;    // after the header line
  std::size_t end = 0;        // where the next block begins
  std::vector<toml_entry> entries;
};

struct toml_doc {
  std::vector<toml_block> blocks;
  std::string error;  // "line N: ..." when the text cannot be split safely
};

// Splits TOML into blocks, checking what that needs: strings, arrays and inline tables closed,
// headers and keys well formed, every line a comment, a header or a key with a value, no table
// defined twice. Values are skipped over, not checked further.
class toml_splitter {
 public:
  explicit toml_splitter(std::string_view text) : t_(text) {}

  toml_doc run() {
    toml_doc doc;
    doc.blocks.emplace_back();
    constexpr std::size_t none = std::string_view::npos;
    std::size_t comments = none;  // start of the comment lines just above
    std::set<std::vector<std::string>> tables;
    while (i_ < t_.size() && error_.empty()) {
      const std::size_t line_start = i_;
      skip_blank();
      if (at_eol()) {
        end_line();
        comments = none;
      } else if (t_[i_] == '#') {
        skip_comment();
        end_line();
        if (comments == none) comments = line_start;
      } else if (t_[i_] == '[') {
        toml_block b = header(line_start, comments == none ? line_start : comments);
        if (!b.array && !tables.insert(b.header).second) fail("table defined twice");
        doc.blocks.back().end = b.begin;
        doc.blocks.push_back(std::move(b));
        comments = none;
      } else {
        toml_entry e{{}, line_start, 0};
        key(e.key);
        skip_blank();
        if (!eat('=')) fail("expected '=' after a key");
        skip_blank();
        if (error_.empty() && (at_eol() || t_[i_] == '#')) fail("a key without a value");
        value();
        end_line();
        e.end = i_;
        doc.blocks.back().entries.push_back(std::move(e));
        comments = none;
      }
    }
    doc.blocks.back().end = t_.size();
    if (!error_.empty()) doc.error = "line " + std::to_string(line_) + ": " + error_;
    return doc;
  }

 private:
  void fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    i_ = t_.size();
  }
  bool eat(char c) {
    if (i_ < t_.size() && t_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void skip_blank() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t')) ++i_;
  }
  [[nodiscard]] bool at_eol() const {
    return i_ == t_.size() || t_[i_] == '\n' ||
           (t_[i_] == '\r' && i_ + 1 < t_.size() && t_[i_ + 1] == '\n');
  }
  void skip_comment() {
    while (i_ < t_.size() && t_[i_] != '\n') ++i_;
    if (i_ > 0 && i_ <= t_.size() && t_[i_ - 1] == '\r') --i_;
  }
  void end_line() {
    if (!error_.empty() || i_ == t_.size()) return;
    eat('\r');
    if (!eat('\n')) {
      fail("unexpected text after a value or header");
      return;
    }
    ++line_;
  }

  toml_block header(std::size_t line_start, std::size_t begin) {
    toml_block b;
    b.begin = begin;
    b.header_at = line_start;
    ++i_;
    b.array = eat('[');
    key(b.header);
    skip_blank();
    if (!eat(']') || (b.array && !eat(']'))) fail("a table header without its closing ]");
    skip_blank();
    if (i_ < t_.size() && t_[i_] == '#') skip_comment();
    if (error_.empty() && !at_eol()) fail("unexpected text after a table header");
    end_line();
    b.body_at = i_;
    return b;
  }

  void key(std::vector<std::string>& out) {
    for (;;) {
      skip_blank();
      std::string part;
      if (i_ < t_.size() && t_[i_] == '"') {
        basic_string(part);
      } else if (i_ < t_.size() && t_[i_] == '\'') {
        const auto close = t_.find('\'', i_ + 1);
        if (close == std::string_view::npos ||
            t_.substr(i_, close - i_).find('\n') != std::string_view::npos) {
          fail("an unterminated string");
          return;
        }
        part = std::string(t_.substr(i_ + 1, close - i_ - 1));
        i_ = close + 1;
      } else {
        const std::size_t from = i_;
        while (i_ < t_.size() && (std::isalnum(static_cast<unsigned char>(t_[i_])) != 0 ||
                                  t_[i_] == '_' || t_[i_] == '-')) {
          ++i_;
        }
        if (i_ == from) {
          fail("expected a key");
          return;
        }
        part = std::string(t_.substr(from, i_ - from));
      }
      out.push_back(std::move(part));
      skip_blank();
      if (!eat('.')) return;
    }
  }

  // A one-line "basic string", its escapes decoded (\uXXXX kept as written: keys here are ASCII).
  void basic_string(std::string& out) {
    ++i_;
    while (i_ < t_.size() && t_[i_] != '"' && t_[i_] != '\n') {
      if (t_[i_] == '\\' && i_ + 1 < t_.size()) {
        const char e = t_[i_ + 1];
        static const std::string_view from = "btnfr\"\\";
        static const std::string_view to = "\b\t\n\f\r\"\\";
        const auto at = from.find(e);
        out += at == std::string_view::npos ? std::string{'\\', e} : std::string{to[at]};
        i_ += 2;
      } else {
        out += t_[i_++];
      }
    }
    if (!eat('"')) fail("an unterminated string");
  }

  // Skips a value (and a comment after it) up to the end of its line, across the lines of
  // multi-line strings, arrays and inline tables.
  void value() {
    int depth = 0;
    while (i_ < t_.size() && error_.empty()) {
      const char c = t_[i_];
      if (c == '\n' || (c == '\r' && i_ + 1 < t_.size() && t_[i_ + 1] == '\n')) {
        if (depth == 0) return;
        i_ += c == '\r' ? 2 : 1;
        ++line_;
      } else if (c == '"' || c == '\'') {
        quoted(c);
      } else if (c == '#') {
        skip_comment();
      } else if (c == '[' || c == '{') {
        ++depth;
        ++i_;
      } else if (c == ']' || c == '}') {
        if (--depth < 0) fail("a closing bracket without its opening one");
        ++i_;
      } else {
        ++i_;
      }
    }
    if (depth > 0) fail("an unterminated array or inline table");
  }

  void quoted(char q) {
    const std::string triple(3, q);
    if (t_.substr(i_, 3) == triple) {
      std::size_t j = i_ + 3;
      for (; j + 3 <= t_.size() && t_.substr(j, 3) != triple; ++j) {
        if (q == '"' && t_[j] == '\\') ++j;
      }
      if (t_.substr(j, 3) != triple) {
        fail("an unterminated multi-line string");
        return;
      }
      line_ +=
          static_cast<std::size_t>(std::count(t_.begin() + static_cast<std::ptrdiff_t>(i_),
                                              t_.begin() + static_cast<std::ptrdiff_t>(j), '\n'));
      i_ = j + 3;
      while (i_ < t_.size() && t_[i_] == q) ++i_;  // up to two quotes of the content
      return;
    }
    ++i_;
    while (i_ < t_.size() && t_[i_] != q && t_[i_] != '\n') {
      if (q == '"' && t_[i_] == '\\') ++i_;
      ++i_;
    }
    if (!eat(q)) fail("an unterminated string");
  }

  std::string_view t_;
  std::size_t i_ = 0;
  std::size_t line_ = 1;
  std::string error_;
};

bool same_mirror(std::string_view a, std::string_view b) {
  return lower(strip_slash(a)) == lower(strip_slash(b));
}

bool is_host_table(const toml_block& b) {
  return !b.array && b.header.size() == 2 && b.header[0] == "host";
}

std::string capabilities_line() { return "  capabilities = [\"pull\", \"resolve\"]\n"; }

std::string table_text(std::string_view mirror) {
  return std::string(table_marker) + "\n[host.\"" + std::string(mirror) + "\"]\n" +
         capabilities_line();
}

std::string new_hosts_file(const registry_host& r, std::string_view mirror) {
  return "# " + r.name + ": pulls go to layercache first, then to " + r.server +
         ".\n# Written by layercachectl node setup.\nserver = \"" + r.server + "\"\n\n" +
         table_text(mirror);
}

// Why `doc` cannot be merged for `mirror` without rewriting what is not ours, or "".
std::string unsafe_layout(const toml_doc& doc, std::string_view mirror) {
  for (const auto& b : doc.blocks) {
    if (b.header.size() >= 2) continue;
    for (const auto& e : b.entries) {
      std::vector<std::string> full = b.header;
      full.insert(full.end(), e.key.begin(), e.key.end());
      if (full[0] != "host") continue;
      if (full.size() == 1) return "`host` is written as an inline table; edit it by hand";
      if (same_mirror(full[1], mirror)) {
        return "host.\"" + std::string(mirror) +
               "\" is written with dotted keys or an inline table; edit it by hand";
      }
    }
  }
  return {};
}

// The body of our table: capabilities first, the rest of the old body (not capabilities, not
// override_path: layercache routes by ?ns= and needs containerd's /v2/ paths) as it was.
std::string our_body(std::string_view text, const toml_block& b) {
  std::string out = capabilities_line();
  std::size_t at = b.body_at;
  for (const auto& e : b.entries) {
    if (e.key.size() == 1 && (e.key[0] == "capabilities" || e.key[0] == "override_path")) {
      out.append(text.substr(at, e.begin - at));
      at = e.end;
    }
  }
  out.append(text.substr(at, b.end - at));
  return out;
}

// The root table with `server` added when it has none.
std::string root_text(std::string_view text, const toml_block& root, const registry_host& r,
                      merged& m) {
  for (const auto& e : root.entries) {
    if (e.key == std::vector<std::string>{"server"}) {
      const std::string line(text.substr(e.begin, e.end - e.begin));
      if (line.find("\"" + r.server + "\"") == std::string::npos &&
          line.find("\"" + r.server + "/\"") == std::string::npos) {
        m.notes.push_back("keeps its own " + strip_slash(line.substr(0, line.find('\n'))) +
                          " (layercache's upstream is " + r.server + ")");
      }
      return std::string(text.substr(root.begin, root.end - root.begin));
    }
  }
  const std::string server = "server = \"" + r.server + "\"\n";
  const std::size_t at = root.entries.empty() ? root.end : root.entries.back().end;
  std::string out(text.substr(0, at));
  if (!out.empty() && out.back() != '\n') out += '\n';
  out += server;
  std::string rest(text.substr(at, root.end - at));
  if (rest.empty() && root.end < text.size()) rest = "\n";
  return out + rest;
}

}  // namespace

merged merge_hosts_toml(const std::optional<std::string>& existing, const registry_host& r,
                        std::string_view mirror_in) {
  const std::string mirror = strip_slash(mirror_in);
  merged m;
  if (!existing) {
    m.text = new_hosts_file(r, mirror);
    return m;
  }
  const std::string& text = *existing;
  const toml_doc doc = toml_splitter(text).run();
  if (!doc.error.empty()) {
    m.error = "not TOML that can be merged safely (" + doc.error + ")";
    return m;
  }
  if (auto why = unsafe_layout(doc, mirror); !why.empty()) {
    m.error = std::move(why);
    return m;
  }
  // Host tables of an earlier mirror of layercache's: removed with their subtables.
  std::set<std::string> old;
  bool ours = false;
  for (const auto& b : doc.blocks) {
    if (!is_host_table(b)) continue;
    if (same_mirror(b.header[1], mirror)) {
      ours = true;
    } else if (text.substr(b.begin, b.header_at - b.begin).find(table_marker) !=
               std::string::npos) {
      old.insert(b.header[1]);
      m.notes.push_back("removes layercache's previous mirror " + b.header[1]);
    }
  }
  std::string out = root_text(text, doc.blocks[0], r, m);
  bool placed = ours;
  for (std::size_t i = 1; i < doc.blocks.size(); ++i) {
    const auto& b = doc.blocks[i];
    const bool host = !b.header.empty() && b.header[0] == "host";
    if (host && !placed) {
      out += table_text(mirror) + "\n";
      placed = true;
    }
    if (host && b.header.size() >= 2 && old.contains(b.header[1])) continue;
    if (is_host_table(b) && same_mirror(b.header[1], mirror)) {
      std::string comments(text.substr(b.begin, b.header_at - b.begin));
      if (comments.find(table_marker) == std::string::npos) {
        comments += std::string(table_marker) + "\n";
      }
      std::string header(text.substr(b.header_at, b.body_at - b.header_at));
      if (!header.ends_with('\n')) header += '\n';
      out += comments + header + our_body(text, b);
      continue;
    }
    out.append(text.substr(b.begin, b.end - b.begin));
  }
  for (std::size_t i = 1; ours && i < doc.blocks.size(); ++i) {
    const auto& b = doc.blocks[i];
    if (!is_host_table(b) || old.contains(b.header[1])) continue;
    if (same_mirror(b.header[1], mirror)) break;
    m.notes.push_back("containerd tries " + b.header[1] +
                      " before layercache (hosts are tried in file order)");
    break;
  }
  if (!placed) {
    if (!out.empty() && out.back() != '\n') out += '\n';
    if (!out.empty() && !out.ends_with("\n\n")) out += '\n';
    out += table_text(mirror);
  }
  m.text = std::move(out);
  return m;
}

std::string check_hosts_toml(const std::string& text, std::string_view mirror_in) {
  const std::string mirror = strip_slash(mirror_in);
  const toml_doc doc = toml_splitter(text).run();
  if (!doc.error.empty()) return "is not valid TOML (" + doc.error + ")";
  const std::string header = "[host.\"" + mirror + "\"]";
  for (const auto& b : doc.blocks) {
    if (!is_host_table(b) || !same_mirror(b.header[1], mirror)) continue;
    bool pull = false;
    bool resolve = false;
    for (const auto& e : b.entries) {
      const std::string_view v = std::string_view(text).substr(e.begin, e.end - e.begin);
      if (e.key == std::vector<std::string>{"capabilities"}) {
        pull = v.find("\"pull\"") != std::string_view::npos ||
               v.find("'pull'") != std::string_view::npos;
        resolve = v.find("\"resolve\"") != std::string_view::npos ||
                  v.find("'resolve'") != std::string_view::npos;
      }
      if (e.key == std::vector<std::string>{"override_path"} &&
          v.find("true") != std::string_view::npos) {
        return "has override_path = true in " + header +
               ": layercache needs containerd's /v2/ paths (it routes by ?ns=)";
      }
    }
    if (!pull || !resolve) {
      return "needs capabilities = [\"pull\", \"resolve\"] in " + header +
             " (resolve: tags are resolved through the mirror too)";
    }
    return {};
  }
  return "has no " + header + " table";
}

// ---- daemon.json ---------------------------------------------------------------------------

namespace {

void pretty(const boost::json::value& v, std::string& out, std::size_t indent) {
  const std::string pad(indent + 2, ' ');
  if (v.is_object() && !v.as_object().empty()) {
    out += "{\n";
    std::size_t i = 0;
    for (const auto& [key, value] : v.as_object()) {
      out += pad + boost::json::serialize(boost::json::string(key)) + ": ";
      pretty(value, out, indent + 2);
      out += ++i == v.as_object().size() ? "\n" : ",\n";
    }
    out += std::string(indent, ' ') + "}";
    return;
  }
  if (v.is_array() && !v.as_array().empty()) {
    const auto& a = v.as_array();
    const bool flat = std::none_of(a.begin(), a.end(), [](const boost::json::value& e) {
      return e.is_object() || e.is_array();
    });
    out += flat ? "[" : "[\n";
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!flat) out += pad;
      pretty(a[i], out, indent + 2);
      if (i + 1 < a.size()) out += flat ? ", " : ",\n";
    }
    out += flat ? "]" : "\n" + std::string(indent, ' ') + "]";
    return;
  }
  out += boost::json::serialize(v);
}

}  // namespace

merged merge_daemon_json(const std::optional<std::string>& existing, std::string_view mirror_in) {
  const std::string mirror = strip_slash(mirror_in);
  merged m;
  boost::json::object doc;
  const bool blank = !existing || existing->find_first_not_of(" \t\r\n") == std::string::npos;
  if (!blank) {
    boost::system::error_code ec;
    auto parsed = boost::json::parse(*existing, ec);
    if (ec) {
      m.error = "is not valid JSON (" + ec.message() + ")";
      return m;
    }
    if (!parsed.is_object()) {
      m.error = "is not a JSON object";
      return m;
    }
    doc = std::move(parsed.as_object());
  }
  boost::json::array mirrors;
  if (const auto* have = doc.if_contains("registry-mirrors")) {
    if (!have->is_array()) {
      m.error = "has a \"registry-mirrors\" that is not an array";
      return m;
    }
    for (const auto& e : have->as_array()) {
      if (!e.is_string()) {
        m.error = "has a \"registry-mirrors\" entry that is not a string";
        return m;
      }
      if (existing && same_mirror(e.as_string(), mirror)) {
        m.text = *existing;
        return m;
      }
    }
    mirrors = have->as_array();
  }
  mirrors.insert(mirrors.begin(), boost::json::value(mirror));
  doc["registry-mirrors"] = std::move(mirrors);
  pretty(doc, m.text, 0);
  m.text += '\n';
  return m;
}

// ---- diff, containerd's config -------------------------------------------------------------

std::string line_diff(std::string_view before, std::string_view after) {
  auto lines = [](std::string_view t) {
    std::vector<std::string_view> out;
    while (!t.empty()) {
      const auto nl = t.find('\n');
      out.push_back(t.substr(0, nl));
      if (nl == std::string_view::npos) break;
      t.remove_prefix(nl + 1);
    }
    return out;
  };
  const auto a = lines(before);
  const auto b = lines(after);
  std::string out;
  if (a.size() * b.size() > 4'000'000) {  // too big to align: all out, all in
    for (const auto l : a) out.append("- ").append(l).append("\n");
    for (const auto l : b) out.append("+ ").append(l).append("\n");
    return out;
  }
  // Longest common subsequence, from the ends.
  std::vector<std::vector<std::uint32_t>> lcs(a.size() + 1,
                                              std::vector<std::uint32_t>(b.size() + 1, 0));
  for (std::size_t i = a.size(); i-- > 0;) {
    for (std::size_t j = b.size(); j-- > 0;) {
      lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  std::size_t i = 0;
  std::size_t j = 0;
  while (i < a.size() || j < b.size()) {
    if (i < a.size() && j < b.size() && a[i] == b[j]) {
      out.append("  ").append(a[i++]).append("\n");
      ++j;
    } else if (j < b.size() && (i == a.size() || lcs[i][j + 1] > lcs[i + 1][j])) {
      out.append("+ ").append(b[j++]).append("\n");
    } else {
      out.append("- ").append(a[i++]).append("\n");
    }
  }
  return out;
}

std::optional<std::string> containerd_config_path(const std::string& text) {
  static const std::regex config_path(R"rx((^|\n)\s*config_path\s*=\s*["']([^"']*)["'])rx");
  std::smatch m;
  if (!std::regex_search(text, m, config_path)) return std::nullopt;
  std::string dir = m[2].str();
  if (const auto colon = dir.find(':'); colon != std::string::npos) dir.resize(colon);
  if (dir.empty()) return std::nullopt;
  return dir;
}

// ---- the files ------------------------------------------------------------------------------

namespace {

namespace fs = std::filesystem;

fs::path under(const fs::path& root, const std::string& path) {
  return root / fs::path(path).relative_path();
}

// The file's text; nullopt when it does not exist. Throws when it exists but cannot be read.
std::optional<std::string> read_file(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(p, ec)) return std::nullopt;
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Backup (once), then the new text through a temp file and a rename, the old mode kept.
std::string write_file(const fs::path& p, bool existed, const std::string& text) {
  std::string said;
  fs::create_directories(p.parent_path());
  auto perms = fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
               fs::perms::others_read;
  if (existed) {
    perms = fs::status(p).permissions();
    fs::path backup = p;
    backup += ".layercache-backup";
    if (!fs::exists(backup)) {
      fs::copy_file(p, backup);
      said = " (the previous file is in " + backup.string() + ")";
    }
  }
  fs::path temp = p;
  temp += ".layercache-new";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + temp.string());
  }
  fs::permissions(temp, perms);
  fs::rename(temp, p);
  return said;
}

void indent_lines(std::ostream& out, std::string_view text) {
  std::istringstream lines{std::string(text)};
  for (std::string line; std::getline(lines, line);) out << "    " << line << "\n";
}

// One file: refused, unchanged, would change (the diff), or written. 0 when all is well.
int settle(const fs::path& p, const std::optional<std::string>& before, const merged& m,
           bool dry_run, std::ostream& out, std::ostream& err) {
  if (!m.ok()) {
    err << "layercachectl: " << p.string() << " " << m.error << "; left unchanged\n";
    return 1;
  }
  if (before && *before == m.text) {
    out << "unchanged    " << p.string() << "\n";
  } else if (dry_run) {
    out << "would " << (before ? "change " : "create ") << p.string() << ":\n";
    indent_lines(out, before ? line_diff(*before, m.text) : line_diff({}, m.text));
  } else {
    const std::string backup = write_file(p, before.has_value(), m.text);
    out << (before ? "changed      " : "created      ") << p.string() << backup << "\n";
  }
  for (const auto& n : m.notes) out << "  note: " << n << "\n";
  return 0;
}

std::string config_path_snippet(const std::string& config_text, const fs::path& dir) {
  static const std::regex v3(R"((^|\n)\s*version\s*=\s*3)");
  const bool three = std::regex_search(config_text, v3);
  return std::string(three ? "[plugins.\"io.containerd.cri.v1.images\".registry]"
                           : "[plugins.\"io.containerd.grpc.v1.cri\".registry]") +
         "\n  config_path = \"" + dir.string() + "\"";
}

// containerd's config.toml: which hosts dir its CRI plugin reads (the default for ours), and
// whether it is the one written to.
fs::path containerd_hosts_dir(const options& o, std::ostream& out) {
  const fs::path config = o.containerd_config.empty() ? under(o.root, "/etc/containerd/config.toml")
                                                      : o.containerd_config;
  const auto text = read_file(config);
  const auto configured = text ? containerd_config_path(*text) : std::nullopt;
  fs::path dir =
      o.hosts_dir ? *o.hosts_dir : under(o.root, configured.value_or("/etc/containerd/certs.d"));
  const std::string as_seen =
      o.root == "/" ? dir.string() : "/" + dir.lexically_relative(o.root).string();
  if (!text) {
    out << "warning: " << config.string()
        << " does not exist: containerd's CRI plugin (Kubernetes) then reads no hosts "
           "directory; create it with (then restart containerd):\n";
    indent_lines(out, "version = 2\n\n" + config_path_snippet({}, as_seen));
  } else if (!configured) {
    out << "warning: " << config.string()
        << " sets no config_path: the CRI plugin (Kubernetes) reads no hosts directory; add "
           "(then restart containerd):\n";
    indent_lines(out, config_path_snippet(*text, as_seen));
  } else if (under(o.root, *configured).lexically_normal() != dir.lexically_normal()) {
    out << "warning: " << config.string() << " has config_path = \"" << *configured
        << "\": the CRI plugin reads hosts from there, not from " << dir.string() << "\n";
  } else {
    out << "ok           " << config.string() << " has config_path = \"" << *configured << "\"\n";
  }
  return dir;
}

int setup_containerd(const options& o, std::ostream& out, std::ostream& err) {
  const fs::path dir = containerd_hosts_dir(o, out);
  int status = 0;
  for (const auto& r : o.registries) {
    const fs::path file = dir / r.name / "hosts.toml";
    const auto before = read_file(file);
    status |= settle(file, before, merge_hosts_toml(before, r, o.mirror), o.dry_run, out, err);
  }
  if (o.mirror.starts_with("https://")) {
    out << "  note: containerd checks layercache's certificate against the system CAs; for a "
           "private CA add ca = \"/path/ca.pem\" to its [host] table (kept on later runs)\n";
  }
  out << "containerd reads hosts.toml at every pull (no restart); ctr needs --hosts-dir "
      << dir.string() << "\n";
  return status;
}

bool loopback_mirror(std::string_view mirror) {
  const auto host = mirror.substr(mirror.find("://") + 3);
  return host.starts_with("127.") || host.starts_with("[::1]") || host.starts_with("localhost");
}

int setup_docker(const options& o, std::ostream& out, std::ostream& err) {
  const fs::path file = o.daemon_json ? *o.daemon_json : under(o.root, "/etc/docker/daemon.json");
  const auto before = read_file(file);
  const merged m = merge_daemon_json(before, o.mirror);
  const int status = settle(file, before, m, o.dry_run, out, err);
  std::string others;
  for (const auto& r : o.registries) {
    if (r.name != "docker.io") others += (others.empty() ? "" : ", ") + r.name;
  }
  if (!others.empty()) {
    out << "  note: dockerd uses registry-mirrors for docker.io images only; it pulls " << others
        << " from the registry itself (through layercache: "
        << o.mirror.substr(o.mirror.find("://") + 3) << "/<upstream name>/<repository>)\n";
  }
  if (o.default_is_docker_hub == false) {
    out << "  note: layercache's default upstream is not Docker Hub: dockerd's docker.io pulls "
           "(no ns=) go to it\n";
  }
  if (o.mirror.starts_with("https://")) {
    out << "  note: dockerd checks layercache's certificate against the system CAs; for a private "
           "CA put it in /etc/docker/certs.d/"
        << o.mirror.substr(8) << "/ca.crt\n";
  }
  if (o.mirror.starts_with("http://") && !loopback_mirror(o.mirror)) {
    out << "  note: a plain-http mirror off loopback also needs \"insecure-registries\" (dockerd "
           "treats only 127.0.0.0/8 and ::1 as insecure by default)\n";
  }
  if (m.ok() && (!before || *before != m.text) && !o.dry_run) {
    out << "dockerd reads registry-mirrors at start and on SIGHUP: `systemctl reload docker` (or "
           "kill -HUP the dockerd process), or restart it\n";
  }
  return status;
}

}  // namespace

int apply(const options& o, std::ostream& out, std::ostream& err) {
  int status = 0;
  try {
    if (o.containerd) status |= setup_containerd(o, out, err);
    if (o.docker) status |= setup_docker(o, out, err);
  } catch (const std::exception& e) {
    err << "layercachectl: " << e.what() << "\n";
    return 1;
  }
  return status;
}

}  // namespace layercache::node_setup
