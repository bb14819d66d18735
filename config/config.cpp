#include "config/config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <map>
#include <sstream>
#include <system_error>
#include <utility>

namespace layercache::config {
namespace {

__extension__ typedef unsigned __int128 uint128;

constexpr std::uint64_t kib = 1024;
constexpr std::uint64_t mib = 1024 * kib;
constexpr std::uint64_t gib = 1024 * mib;
constexpr std::uint64_t tib = 1024 * gib;

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_lower_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z'); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Decimal digits only: no sign, no whitespace. nullopt on garbage or overflow.
std::optional<std::uint64_t> parse_uint(std::string_view s) {
  if (s.empty() || !std::all_of(s.begin(), s.end(), is_digit)) return std::nullopt;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return value;
}

// A value quoted for a message: bounded in length, control characters escaped.
std::string quote(std::string_view s) {
  constexpr std::size_t max_shown = 80;
  std::string out = "'";
  for (std::size_t i = 0; i < s.size() && i < max_shown; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_shown) out += "...";
  out += '\'';
  return out;
}

// "1KiB", "64MiB", "1TiB" or a plain byte count, for range messages.
std::string size_text(std::uint64_t bytes) {
  if (bytes != 0 && bytes % tib == 0) return std::to_string(bytes / tib) + "TiB";
  if (bytes != 0 && bytes % gib == 0) return std::to_string(bytes / gib) + "GiB";
  if (bytes != 0 && bytes % mib == 0) return std::to_string(bytes / mib) + "MiB";
  if (bytes != 0 && bytes % kib == 0) return std::to_string(bytes / kib) + "KiB";
  return std::to_string(bytes);
}

bool is_ipv4(std::string_view s) {
  in_addr addr{};
  return inet_pton(AF_INET, std::string(s).c_str(), &addr) == 1;
}

bool is_ipv6(std::string_view s) {
  in6_addr addr{};
  return inet_pton(AF_INET6, std::string(s).c_str(), &addr) == 1;
}

// An RFC 1123 host name; all-numeric names must be valid IPv4 addresses.
bool is_host_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  std::size_t label = 0;
  char prev = '.';
  bool numeric = true;
  for (char c : s) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else if (is_alnum(c) || c == '-') {
      if ((c == '-' && label == 0) || ++label > 63) return false;
      if (!is_digit(c)) numeric = false;
    } else {
      return false;
    }
    prev = c;
  }
  if (label == 0 || prev == '-') return false;
  return !numeric || is_ipv4(s);
}

// "host", "host:port", "[v6]" or "[v6]:port", split but not validated.
struct authority {
  std::string host;  // without brackets
  bool bracketed = false;
  std::optional<std::string_view> port;
};

std::optional<authority> split_authority(std::string_view s) {
  authority a;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    a.host = std::string(s.substr(1, close - 1));
    a.bracketed = true;
    auto rest = s.substr(close + 1);
    if (rest.empty()) return a;
    if (rest.front() != ':') return std::nullopt;
    a.port = rest.substr(1);
    return a;
  }
  auto colon = s.find(':');
  if (colon == std::string_view::npos) {
    a.host = std::string(s);
    return a;
  }
  if (s.find(':', colon + 1) != std::string_view::npos) return std::nullopt;  // bare IPv6
  a.host = std::string(s.substr(0, colon));
  a.port = s.substr(colon + 1);
  return a;
}

std::optional<std::uint16_t> parse_port(std::string_view s, std::uint64_t min) {
  auto v = parse_uint(s);
  if (!v || *v < min || *v > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(*v);
}

// One repository path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool is_path_component(std::string_view s) {
  std::size_t i = 0;
  for (;;) {
    std::size_t start = i;
    while (i < s.size() && is_lower_alnum(s[i])) ++i;
    if (i == start) return false;
    if (i == s.size()) return true;
    if (s[i] == '.') {
      ++i;
    } else if (s[i] == '_') {
      ++i;
      if (i < s.size() && s[i] == '_') ++i;
    } else if (s[i] == '-') {
      while (i < s.size() && s[i] == '-') ++i;
    } else {
      return false;
    }
  }
}

// The parts of an image reference (is_image_reference), as the oci library reads them.
constexpr std::size_t max_reference_name = 255;

// `label ('.' label)*`, label = alnum | alnum [alnum-]* alnum; no length limit per label.
bool is_reference_host(std::string_view host) {
  if (host.empty()) return false;
  std::size_t i = 0;
  for (;;) {
    const std::size_t start = i;
    while (i < host.size() && (is_alnum(host[i]) || host[i] == '-')) ++i;
    if (i == start || host[start] == '-' || host[i - 1] == '-') return false;
    if (i == host.size()) return true;
    if (host[i] != '.') return false;
    ++i;
  }
}

// 1..65535 in at most five digits.
bool is_reference_port(std::string_view port) {
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), is_digit)) {
    return false;
  }
  const auto value = parse_uint(port);
  return value && *value >= 1 && *value <= 65535;
}

// host[:port] or [v6][:port], at most 255 bytes.
bool is_reference_registry(std::string_view registry) {
  if (registry.empty() || registry.size() > max_reference_name) return false;
  std::string_view host = registry;
  std::optional<std::string_view> port;
  if (registry.front() == '[') {
    const auto close = registry.find(']');
    if (close == std::string_view::npos) return false;
    const auto address = registry.substr(1, close - 1);
    if (address.size() >= INET6_ADDRSTRLEN || !is_ipv6(address)) return false;
    const auto rest = registry.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
    }
  } else {
    const auto colon = registry.find(':');
    host = registry.substr(0, colon);
    if (!is_reference_host(host)) return false;
    if (colon != std::string_view::npos) port = registry.substr(colon + 1);
  }
  return !port || is_reference_port(*port);
}

// Components (is_path_component) separated by single '/', at most 255 bytes.
bool is_reference_repository(std::string_view name) {
  if (name.empty() || name.size() > max_reference_name) return false;
  for (;;) {
    const auto slash = name.find('/');
    if (!is_path_component(name.substr(0, slash))) return false;
    if (slash == std::string_view::npos) return true;
    name = name.substr(slash + 1);
  }
}

// [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
bool is_reference_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128 || (!is_alnum(tag[0]) && tag[0] != '_')) return false;
  return std::all_of(tag.begin() + 1, tag.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

// "sha256:" + 64 or "sha512:" + 128 lowercase hex digits.
bool is_reference_digest(std::string_view d) {
  std::size_t hex = 0;
  if (d.starts_with("sha256:")) {
    hex = 64;
  } else if (d.starts_with("sha512:")) {
    hex = 128;
  } else {
    return false;
  }
  d.remove_prefix(7);
  return d.size() == hex && std::all_of(d.begin(), d.end(), [](char c) {
           return is_digit(c) || (c >= 'a' && c <= 'f');
         });
}

// Empty when `path` names a readable file that is not a directory; otherwise why not.
std::string unreadable_reason(const std::string& path) {
  if (path.empty()) return "must not be empty";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return "file not found: " + quote(path);
    return "cannot read " + quote(path) + ": " + std::generic_category().message(err);
  }
  struct stat st {};
  bool is_dir = ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
  ::close(fd);
  if (is_dir) return quote(path) + " is a directory, not a file";
  return {};
}

// Reads a whole (small) file. Empty optional with `error` set on failure.
std::optional<std::string> read_small_file(const std::string& path, std::size_t limit,
                                           std::string& error) {
  if (auto why = unreadable_reason(path); !why.empty()) {
    error = why;
    return std::nullopt;
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = "cannot read " + quote(path) + ": " + std::generic_category().message(errno);
    return std::nullopt;
  }
  std::string content;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      error = "cannot read " + quote(path) + ": " + std::generic_category().message(errno);
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    content.append(buf, static_cast<std::size_t>(n));
    if (content.size() > limit) {
      error = quote(path) + " is larger than " + size_text(limit);
      ::close(fd);
      return std::nullopt;
    }
  }
  ::close(fd);
  return content;
}

int line_of(const YAML::Node& node) {
  YAML::Mark mark = node.Mark();
  return mark.is_null() ? 0 : mark.line + 1;
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return quote(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Null:
      return "an empty value";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

// Counts the documents of a YAML stream up to `limit` and notes the line of the second one's
// root node. yaml-cpp 0.7's LoadAll never returns on a stray ',' outside a flow collection
// (every document it reads there is another null node that consumes nothing; found by
// fuzz/config_fuzz.cpp), so documents are counted with a bound and only the first is loaded.
class document_counter : public YAML::EventHandler {
 public:
  std::size_t documents = 0;
  int second_line = 0;

  void OnDocumentStart(const YAML::Mark&) override { ++documents; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { node(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { node(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    node(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    node(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    node(mark);
  }
  void OnMapEnd() override {}

 private:
  void node(const YAML::Mark& mark) {
    if (documents != 2 || seen_second_) return;
    seen_second_ = true;
    second_line = mark.is_null() ? 0 : mark.line + 1;
  }
  bool seen_second_ = false;
};

std::size_t count_documents(const std::string& yaml, std::size_t limit, int& second_line) {
  std::istringstream in(yaml);
  YAML::Parser parser(in);
  document_counter counter;
  while (counter.documents < limit && parser.HandleNextDocument(counter)) {
  }
  second_line = counter.second_line;
  return counter.documents;
}

std::string index_path(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

class problem_list {
 public:
  void add(std::string path, int line, std::string message) {
    problems_.push_back(problem{std::move(path), line, std::move(message)});
  }
  void wrong_type(const std::string& path, int line, const YAML::Node& node,
                  std::string_view expected) {
    add(path, line, "expected " + std::string(expected) + ", got " + describe(node));
  }
  [[nodiscard]] bool empty() const { return problems_.empty(); }
  std::vector<problem> take() { return std::move(problems_); }

 private:
  std::vector<problem> problems_;
};

// A YAML mapping checked against the keys it may hold. Construction reports a non-mapping
// node, duplicate keys and unknown keys; the readers below report the rest.
//
// Problems with a value are reported at its key's line: yaml-cpp marks an empty (null) value
// with the position of the token after it, often on a later line. For the same reason a
// mapping that is itself a value is given its key's line as `key_line`.
class mapping {
 public:
  mapping(problem_list& problems, const YAML::Node& node, std::string path,
          std::initializer_list<std::string_view> known, int key_line = 0)
      : problems_(problems), path_(std::move(path)) {
    if (!node.IsMap()) {
      line_ = key_line > 0 ? key_line : line_of(node);
      problems_.wrong_type(path_, line_, node, "a mapping");
      return;
    }
    line_ = line_of(node);
    valid_ = true;
    // Entries by value: yaml-cpp's iterator yields a temporary pair, so `it->first` dangles.
    for (const auto& entry : node) {
      const YAML::Node key = entry.first;
      if (!key.IsScalar()) {
        problems_.add(path_, line_of(key), "expected a key name, got " + describe(key));
        continue;
      }
      const std::string& name = key.Scalar();
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        problems_.add(child(name), line_of(key), "unknown key");
        continue;
      }
      if (find(name) != nullptr) {
        problems_.add(child(name), line_of(key), "duplicate key");
        continue;
      }
      fields_.push_back(field{name, entry.second, line_of(key)});
    }
  }

  [[nodiscard]] bool valid() const { return valid_; }
  // The line of the mapping's first key.
  [[nodiscard]] int line() const { return line_; }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string child(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  [[nodiscard]] problem_list& problems() const { return problems_; }

  [[nodiscard]] const YAML::Node* find(std::string_view key) const {
    const field* f = lookup(key);
    return f != nullptr ? &f->value : nullptr;
  }

  // The line of `key`, or of this mapping when the key is absent.
  [[nodiscard]] int key_line(std::string_view key) const {
    const field* f = lookup(key);
    return f != nullptr ? f->line : line_;
  }

  void report(std::string_view key, std::string message) const {
    problems_.add(child(key), key_line(key), std::move(message));
  }

  // `key` is present but its value is not what `expected` describes.
  void wrong_type(std::string_view key, std::string_view expected) const {
    problems_.wrong_type(child(key), key_line(key), *find(key), expected);
  }

  // A key the document must set; reported at this mapping's line (the key has none).
  void missing(std::string_view key, std::string_view message = "required key is missing") const {
    if (valid_) problems_.add(child(key), line_, std::string(message));
  }

 private:
  struct field {
    std::string name;
    YAML::Node value;
    int line = 0;
  };

  [[nodiscard]] const field* lookup(std::string_view key) const {
    for (const field& f : fields_) {
      if (f.name == key) return &f;
    }
    return nullptr;
  }

  problem_list& problems_;
  std::string path_;
  int line_ = 0;
  bool valid_ = false;
  std::vector<field> fields_;
};

// The scalar text of `key`, or nullopt when absent (and reported if required) or not a scalar.
std::optional<std::string> scalar(const mapping& m, std::string_view key, std::string_view expected,
                                  bool required = false) {
  const YAML::Node* node = m.find(key);
  if (node == nullptr) {
    if (required) m.missing(key);
    return std::nullopt;
  }
  if (!node->IsScalar()) {
    m.wrong_type(key, expected);
    return std::nullopt;
  }
  return node->Scalar();
}

bool read_string(const mapping& m, std::string_view key, std::string& out, bool required = false) {
  auto text = scalar(m, key, "a string", required);
  if (!text) return false;
  out = std::move(*text);
  return true;
}

void read_bool(const mapping& m, std::string_view key, bool& out) {
  auto text = scalar(m, key, "true or false");
  if (!text) return;
  if (*text == "true" || *text == "True" || *text == "TRUE") {
    out = true;
  } else if (*text == "false" || *text == "False" || *text == "FALSE") {
    out = false;
  } else {
    m.wrong_type(key, "true or false");
  }
}

template <class T>
void read_uint(const mapping& m, std::string_view key, T& out, std::uint64_t min,
               std::uint64_t max) {
  auto text = scalar(m, key, "a whole number");
  if (!text) return;
  if (text->empty() || !std::all_of(text->begin(), text->end(), is_digit)) {
    m.wrong_type(key, "a whole number");
    return;
  }
  auto value = parse_uint(*text);
  if (!value || *value < min || *value > max) {
    m.report(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                      ", got " + quote(*text));
    return;
  }
  out = static_cast<T>(*value);
}

void read_size(const mapping& m, std::string_view key, std::uint64_t& out, std::uint64_t min,
               std::uint64_t max) {
  constexpr std::string_view expected = "a size like 64MiB";
  auto text = scalar(m, key, expected);
  if (!text) return;
  auto value = parse_size(*text);
  if (!value) {
    m.wrong_type(key, expected);
    return;
  }
  if (*value < min || *value > max) {
    m.report(key, "must be between " + size_text(min) + " and " + size_text(max) + ", got " +
                      quote(*text));
    return;
  }
  out = *value;
}

void read_duration(const mapping& m, std::string_view key, duration& out, bool allow_zero) {
  constexpr std::string_view expected = "a duration like 30s";
  auto text = scalar(m, key, expected);
  if (!text) return;
  auto value = parse_duration(*text);
  if (!value) {
    m.wrong_type(key, expected);
    return;
  }
  if (!allow_zero && value->count() == 0) {
    m.report(key, "must be longer than 0s");
    return;
  }
  out = *value;
}

// False when `key` is set to something that is not one of `choices` (reported).
template <class E>
bool read_enum(const mapping& m, std::string_view key, E& out,
               std::initializer_list<std::pair<std::string_view, E>> choices) {
  std::string expected = "one of ";
  for (const auto& choice : choices) {
    if (&choice != choices.begin()) expected += ", ";
    expected += choice.first;
  }
  const YAML::Node* node = m.find(key);
  if (node == nullptr) return true;
  if (node->IsScalar()) {
    for (const auto& [name, value] : choices) {
      if (node->Scalar() == name) {
        out = value;
        return true;
      }
    }
  }
  m.wrong_type(key, expected);
  return false;
}

// Reports a non-list; true when `node` is a list.
bool expect_list(problem_list& problems, const YAML::Node& node, const std::string& path,
                 int line) {
  if (node.IsSequence()) return true;
  problems.wrong_type(path, line, node, "a list");
  return false;
}

void check_file(const mapping& m, std::string_view key, const std::string& file) {
  if (auto why = unreadable_reason(file); !why.empty()) {
    m.report(key, why);
  }
}

// A literal "IPv4:port" or "[IPv6]:port" (port 0: any free port). False when missing or bad
// (reported).
bool read_address(const mapping& m, std::string_view key, std::string& host, std::uint16_t& port) {
  std::string address;
  if (!read_string(m, key, address, true)) return false;
  auto a = split_authority(address);
  if (!a || !a->port) {
    m.report(key, "expected an address like 127.0.0.1:5000 or [::1]:5000, got " + quote(address));
    return false;
  }
  bool ok = true;
  if (a->bracketed ? !is_ipv6(a->host) : !is_ipv4(a->host)) {
    m.report(key, "host must be a literal IPv4 or [IPv6] address, got " + quote(a->host));
    ok = false;
  }
  if (auto p = parse_port(*a->port, 0)) {
    port = *p;
  } else {
    m.report(key, "port must be between 0 and 65535, got " + quote(*a->port));
    ok = false;
  }
  host = a->host;
  return ok;
}

// A secret token from `file` (trailing whitespace dropped); reported at `key` when unreadable
// or empty.
std::optional<std::string> read_token_file(const mapping& m, std::string_view key,
                                           const std::string& file) {
  std::string error;
  auto content = read_small_file(file, 64 * kib, error);
  if (!content) {
    m.report(key, error);
    return std::nullopt;
  }
  while (!content->empty() && std::isspace(static_cast<unsigned char>(content->back()))) {
    content->pop_back();
  }
  if (content->empty()) {
    m.report(key, "token file " + quote(file) + " is empty");
    return std::nullopt;
  }
  return content;
}

// admin.hosts: "name" or "name:port" ([v6] too).
void read_admin_hosts(problem_list& problems, const mapping& m, admin_settings& out) {
  const YAML::Node* hosts = m.find("hosts");
  if (hosts == nullptr) return;
  const std::string path = m.child("hosts");
  if (!expect_list(problems, *hosts, path, m.key_line("hosts"))) return;
  for (std::size_t i = 0; i < hosts->size(); ++i) {
    const YAML::Node& host = (*hosts)[i];
    constexpr std::string_view expected = "a host name like node1.example.com or host:port";
    const auto a = host.IsScalar() ? split_authority(host.Scalar()) : std::nullopt;
    const bool ok = a && (a->bracketed ? is_ipv6(a->host) : is_host_name(a->host)) &&
                    (!a->port || parse_port(*a->port, 1));
    if (!ok) {
      problems.wrong_type(index_path(path, i), line_of(host), host, expected);
      continue;
    }
    out.hosts.push_back(to_lower(host.Scalar()));
  }
}

void read_admin(problem_list& problems, const YAML::Node& node, int line, admin_settings& out) {
  mapping m(problems, node, "admin",
            {"enabled", "address", "token_file", "metrics_need_token", "max_connections", "hosts"},
            line);
  if (!m.valid()) return;
  read_bool(m, "enabled", out.enabled);
  read_uint(m, "max_connections", out.max_connections, 1, 65536);
  read_admin_hosts(problems, m, out);
  bool address_ok = true;
  if (m.find("address") != nullptr) address_ok = read_address(m, "address", out.host, out.port);
  read_bool(m, "metrics_need_token", out.metrics_need_token);
  if (read_string(m, "token_file", out.token_file)) {
    if (auto token = read_token_file(m, "token_file", out.token_file))
      out.token = std::move(*token);
  }
  if (address_ok && out.enabled && !is_loopback(out.host) && m.find("token_file") == nullptr) {
    m.report("address",
             "a non-loopback admin address needs token_file (the admin API can purge "
             "the cache)");
  }
  if (out.metrics_need_token && m.find("token_file") == nullptr) {
    m.report("metrics_need_token", "needs token_file");
  }
}

void read_listener(problem_list& problems, const YAML::Node& node, const std::string& path,
                   std::vector<listener>& out) {
  mapping m(problems, node, path, {"address", "tls"});
  if (!m.valid()) return;
  listener l;
  bool ok = read_address(m, "address", l.host, l.port);
  if (const YAML::Node* tls = m.find("tls")) {
    mapping t(problems, *tls, m.child("tls"), {"cert_file", "key_file", "client_ca_file"},
              m.key_line("tls"));
    if (t.valid()) {
      tls_identity id;
      if (read_string(t, "cert_file", id.cert_file, true)) check_file(t, "cert_file", id.cert_file);
      if (read_string(t, "key_file", id.key_file, true)) check_file(t, "key_file", id.key_file);
      if (read_string(t, "client_ca_file", id.client_ca_file)) {
        check_file(t, "client_ca_file", id.client_ca_file);
      }
      l.tls = std::move(id);
    }
  }
  if (ok) out.push_back(std::move(l));
}

void read_server(problem_list& problems, const YAML::Node& node, int line, server_settings& out) {
  mapping m(problems, node, "server",
            {"listen", "threads", "timeouts", "max_connections", "max_header_size",
             "max_manifest_size", "client_auth"},
            line);
  if (!m.valid()) return;
  if (const YAML::Node* listen = m.find("listen")) {
    out.listen.clear();
    if (expect_list(problems, *listen, m.child("listen"), m.key_line("listen"))) {
      if (listen->size() == 0) {
        m.report("listen", "at least one listener is required");
      }
      for (std::size_t i = 0; i < listen->size(); ++i) {
        read_listener(problems, (*listen)[i], index_path(m.child("listen"), i), out.listen);
      }
    }
  }
  read_uint(m, "threads", out.threads, 0, 256);
  if (const YAML::Node* timeouts = m.find("timeouts")) {
    mapping t(problems, *timeouts, m.child("timeouts"),
              {"request_header", "idle", "write", "shutdown"}, m.key_line("timeouts"));
    read_duration(t, "request_header", out.timeouts.request_header, false);
    read_duration(t, "idle", out.timeouts.idle, false);
    read_duration(t, "write", out.timeouts.write, false);
    read_duration(t, "shutdown", out.timeouts.shutdown, true);
  }
  read_uint(m, "max_connections", out.max_connections, 1, 1'000'000);
  read_size(m, "max_header_size", out.max_header_size, kib, mib);
  read_size(m, "max_manifest_size", out.max_manifest_size, kib, 64 * mib);
  if (const YAML::Node* auth = m.find("client_auth")) {
    mapping a(problems, *auth, m.child("client_auth"), {"token_file"}, m.key_line("client_auth"));
    if (a.valid() && read_string(a, "token_file", out.client_token_file, true)) {
      if (auto token = read_token_file(a, "token_file", out.client_token_file)) {
        out.client_token = std::move(*token);
      }
    }
  }
}

void read_cache(problem_list& problems, const YAML::Node& node, int line, cache_settings& out) {
  mapping m(problems, node, "cache",
            {"enabled", "path", "capacity", "chunk_size", "block_cache", "memory_cache",
             "min_free_disk", "max_disk", "sync_writes", "fetch_size", "parallel_fetches",
             "io_threads", "complete_partial", "tag_ttl", "max_stale"},
            line);
  if (!m.valid()) return;
  read_bool(m, "enabled", out.enabled);
  read_size(m, "fetch_size", out.fetch_size, 64 * kib, 256 * mib);
  read_uint(m, "parallel_fetches", out.parallel_fetches, 1, 64);
  read_uint(m, "io_threads", out.io_threads, 1, 64);
  read_bool(m, "complete_partial", out.complete_partial);
  if (read_string(m, "path", out.path) && out.path.empty()) {
    m.report("path", "must not be empty");
  }
  read_size(m, "capacity", out.capacity, 64 * mib, 1024 * tib);
  std::uint64_t chunk_size = out.chunk_size;
  if (m.find("chunk_size") != nullptr) {
    chunk_size = 0;
    read_size(m, "chunk_size", chunk_size, 64 * kib, 16 * mib);
    if (chunk_size != 0 && (chunk_size & (chunk_size - 1)) != 0) {
      m.report("chunk_size",
               "must be a power of two, like 1MiB, got " + quote(m.find("chunk_size")->Scalar()));
    } else if (chunk_size != 0) {
      out.chunk_size = static_cast<std::uint32_t>(chunk_size);
    }
  }
  read_size(m, "block_cache", out.block_cache, 8 * mib, tib);
  read_size(m, "memory_cache", out.memory_cache, 0, tib);
  read_size(m, "min_free_disk", out.min_free_disk, 0, 1024 * tib);
  if (m.find("max_disk") != nullptr) {
    std::uint64_t max_disk = 0;
    read_size(m, "max_disk", max_disk, 0, 1024 * tib);
    if (max_disk != 0) {
      if (max_disk < 256 * mib) {
        m.report("max_disk",
                 "must be 0 (no limit) or at least 256MiB (RocksDB's memtables and "
                 "logs alone take ~100MiB), got " +
                     quote(m.find("max_disk")->Scalar()));
      } else if (out.capacity > max_disk) {
        m.report("max_disk", "is less than cache.capacity (" + size_text(out.capacity) +
                                 "): the files of a full cache take about 2.5 times its "
                                 "capacity; set capacity to max_disk / 2.5 or less");
      } else {
        out.max_disk = max_disk;
      }
    }
  }
  read_bool(m, "sync_writes", out.sync_writes);
  read_duration(m, "tag_ttl", out.tag_ttl, true);
  read_duration(m, "max_stale", out.max_stale, true);
}

void read_prefetch(problem_list& problems, const YAML::Node& node, int line,
                   prefetch_settings& out) {
  mapping m(problems, node, "prefetch",
            {"enabled", "window", "quiet", "concurrency", "eager_layers", "preload", "publish",
             "fetch_published"},
            line);
  if (!m.valid()) return;
  read_bool(m, "enabled", out.enabled);
  read_duration(m, "quiet", out.quiet, true);
  read_bool(m, "publish", out.publish);
  read_bool(m, "fetch_published", out.fetch_published);
  read_duration(m, "window", out.window, false);
  read_uint(m, "concurrency", out.concurrency, 1, 64);
  read_enum(m, "eager_layers", out.eager_layers,
            {{"auto", eager_mode::automatic},
             {"always", eager_mode::always},
             {"never", eager_mode::never}});
  const YAML::Node* list = m.find("preload");
  if (list == nullptr) return;
  const std::string path = m.child("preload");
  if (!expect_list(problems, *list, path, m.key_line("preload"))) return;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const YAML::Node item = (*list)[i];
    const std::string item_path = index_path(path, i);
    if (!item.IsScalar()) {
      problems.wrong_type(item_path, line_of(item), item, "an image reference");
      continue;
    }
    if (!is_image_reference(item.Scalar())) {
      problems.add(
          item_path, line_of(item),
          "not an image reference like registry/repository:tag, got " + quote(item.Scalar()));
      continue;
    }
    out.preload.push_back(item.Scalar());
  }
}

// Parses `url` into scheme, host and port; reports what is wrong with it. The URL itself is
// never quoted: it may carry credentials.
// Where an upstream or a mirror is: `url` as written, and its parts once valid.
struct url_parts {
  std::string& url;
  std::string& scheme;
  std::string& host;
  std::uint16_t& port;
};

void read_url(const mapping& m, url_parts u) {
  if (!read_string(m, "url", u.url, true)) return;
  const std::string path = m.child("url");
  const int line = m.key_line("url");
  auto bad = [&](std::string message) { m.problems().add(path, line, std::move(message)); };

  const std::string_view url = u.url;
  if (url.find('@') != std::string_view::npos) {
    // Anything around an '@' may be a password: say nothing more about this URL.
    bad("must not contain '@': user info (user:password@) is not allowed, use auth instead");
    return;
  }
  if (std::any_of(url.begin(), url.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    bad("must not contain spaces or control characters");
    return;
  }
  auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    bad("expected a URL like https://registry.example.com");
    return;
  }
  std::string scheme = to_lower(url.substr(0, sep));
  if (scheme != "http" && scheme != "https") {
    bad("scheme must be http or https, got " + quote(url.substr(0, sep)));
    return;
  }
  auto rest = url.substr(sep + 3);
  auto end = rest.find_first_of("/?#");
  auto host_port = rest.substr(0, end);
  auto tail = end == std::string_view::npos ? std::string_view{} : rest.substr(end);

  bool ok = true;
  auto a = split_authority(host_port);
  if (!a) {
    bad("invalid host " + quote(host_port) + " (IPv6 addresses go in brackets)");
    ok = false;
  } else {
    if (a->host.empty()) {
      bad("missing host");
      ok = false;
    } else if (a->bracketed ? !is_ipv6(a->host) : !is_host_name(a->host)) {
      bad("invalid host " + quote(a->host));
      ok = false;
    }
    if (a->port) {
      if (auto port = parse_port(*a->port, 1)) {
        u.port = *port;
      } else {
        bad("port must be between 1 and 65535, got " + quote(*a->port));
        ok = false;
      }
    } else {
      u.port = scheme == "https" ? 443 : 80;
    }
  }
  if (auto hash = tail.find('#'); hash != std::string_view::npos) {
    bad("must not have a fragment");
    tail = tail.substr(0, hash);
    ok = false;
  }
  if (auto question = tail.find('?'); question != std::string_view::npos) {
    bad("must not have a query");
    tail = tail.substr(0, question);
    ok = false;
  }
  if (!tail.empty() && tail != "/") {
    bad("must not have a path, got " + quote(tail));
    ok = false;
  }
  if (ok) {
    u.scheme = std::move(scheme);
    u.host = to_lower(a->host);
  }
}

// Empty when `url` is an http(s) URL with a valid host and optional port and path; else why
// not. Like upstream URLs, the text is not quoted back (it may carry credentials).
std::string http_url_problem(std::string_view url) {
  if (url.find('@') != std::string_view::npos) {
    return "must not contain '@': user info is not allowed";
  }
  if (std::any_of(url.begin(), url.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    return "must not contain spaces or control characters";
  }
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) return "expected a URL like http://host/path";
  const std::string scheme = to_lower(url.substr(0, sep));
  if (scheme != "http" && scheme != "https") return "scheme must be http or https";
  const auto rest = url.substr(sep + 3);
  const auto host_port = rest.substr(0, rest.find_first_of("/?#"));
  auto a = split_authority(host_port);
  if (!a || a->host.empty() || (a->bracketed ? !is_ipv6(a->host) : !is_host_name(a->host))) {
    return "invalid host";
  }
  if (a->port && !parse_port(*a->port, 1)) return "port must be between 1 and 65535";
  if (rest.find('#') != std::string_view::npos) return "must not have a fragment";
  return {};
}

void read_basic_password(problem_list& problems, const mapping& m, const std::string& path,
                         upstream_auth& out) {
  bool has_file = read_string(m, "password_file", out.password_file);
  bool has_env = read_string(m, "password_env", out.password_env);
  if (m.find("password_file") != nullptr && m.find("password_env") != nullptr) {
    m.report("password_env", "set only one of password_file and password_env");
    return;
  }
  if (m.find("password_file") == nullptr && m.find("password_env") == nullptr) {
    problems.add(path, m.line(), "basic auth needs password_file or password_env");
    return;
  }
  if (has_file) {
    std::string error;
    constexpr std::size_t limit = 64 * kib;
    if (auto content = read_small_file(out.password_file, limit, error)) {
      while (!content->empty() && (content->back() == '\n' || content->back() == '\r')) {
        content->pop_back();
      }
      if (content->empty()) {
        m.report("password_file", "password file " + quote(out.password_file) + " is empty");
      } else {
        out.password = std::move(*content);
      }
    } else {
      m.report("password_file", error);
    }
  }
  if (has_env) {
    if (out.password_env.empty()) {
      m.report("password_env", "must not be empty");
      return;
    }
    // NOLINTNEXTLINE(concurrency-mt-unsafe): layercache never sets its environment after start
    const char* value = std::getenv(out.password_env.c_str());
    if (value == nullptr) {
      m.report("password_env", "environment variable " + quote(out.password_env) + " is not set");
    } else if (*value == '\0') {
      m.report("password_env", "environment variable " + quote(out.password_env) + " is empty");
    } else {
      out.password = value;
    }
  }
}

void read_realm_hosts(problem_list& problems, const mapping& m, upstream_auth& out) {
  const YAML::Node* hosts = m.find("realm_hosts");
  if (hosts == nullptr) return;
  const std::string path = m.child("realm_hosts");
  if (!expect_list(problems, *hosts, path, m.key_line("realm_hosts"))) return;
  if (hosts->size() == 0) {
    m.report("realm_hosts", "must list at least one host (leave it out for the default)");
    return;
  }
  for (std::size_t i = 0; i < hosts->size(); ++i) {
    const YAML::Node& host = (*hosts)[i];
    constexpr std::string_view expected =
        "a host name like auth.example.com, *.example.com or auth.example.com:5001";
    if (!host.IsScalar()) {
      problems.wrong_type(index_path(path, i), line_of(host), host, expected);
      continue;
    }
    // An optional ":port" ("[v6]:port" for IPv6 addresses).
    auto a = split_authority(host.Scalar());
    if (!a && is_ipv6(host.Scalar())) a = authority{host.Scalar(), false, std::nullopt};
    std::string_view name = a ? std::string_view(a->host) : std::string_view();
    const bool wildcard = name.starts_with("*.");
    if (wildcard) name.remove_prefix(2);
    const bool host_ok = wildcard ? is_host_name(name) && name.find('.') != std::string_view::npos
                         : (a && a->bracketed) ? is_ipv6(name)
                                               : is_host_name(name) || is_ipv6(name);
    const bool ok = a && host_ok && (!a->port || parse_port(*a->port, 1));
    if (!ok) {
      problems.wrong_type(index_path(path, i), line_of(host), host, expected);
      continue;
    }
    out.realm_hosts.push_back(to_lower(host.Scalar()));
  }
}

// Keys set that belong to another auth type than `type`, each reported; true when there was
// one (which other keys belong depends on the type, so nothing more is read).
bool misplaced_auth_keys(const mapping& m, auth_type type) {
  struct owned_keys {
    auth_type type;
    std::string_view type_name;
    std::initializer_list<std::string_view> keys;
  };
  const owned_keys owners[] = {
      {auth_type::basic, "basic", {"username", "password_file", "password_env"}},
      {auth_type::gce_metadata, "gce_metadata", {"metadata_url"}},
      {auth_type::docker_config,
       "docker_config",
       {"docker_config", "registry", "helper_dir", "helper_timeout"}},
  };
  bool misplaced = false;
  for (const auto& owner : owners) {
    if (owner.type == type) continue;
    for (std::string_view key : owner.keys) {
      if (m.find(key) != nullptr) {
        m.report(key, "only valid with type: " + std::string(owner.type_name));
        misplaced = true;
      }
    }
  }
  return misplaced;
}

// type: basic — username, and the password from a file or the environment.
void read_basic_auth(problem_list& problems, const mapping& m, const std::string& path,
                     upstream_auth& out) {
  const bool has_username = read_string(m, "username", out.username);
  if (m.find("username") == nullptr) {
    m.missing("username", "required for basic auth");
  } else if (has_username) {
    if (out.username.empty()) {
      m.report("username", "must not be empty");
    } else if (out.username.find(':') != std::string::npos) {
      m.report("username", "must not contain ':'");
    }
  }
  read_basic_password(problems, m, path, out);
}

// type: gce_metadata — the metadata server's URL.
void read_gce_metadata_auth(const mapping& m, upstream_auth& out) {
  if (read_string(m, "metadata_url", out.metadata_url)) {
    if (auto why = http_url_problem(out.metadata_url); !why.empty()) {
      m.report("metadata_url", why);
    }
  }
}

// type: docker_config — the config file, the registry's entry in it, credential helpers.
void read_docker_config_auth(const mapping& m, upstream_auth& out) {
  if (read_string(m, "docker_config", out.docker_config, true)) {
    if (auto why = unreadable_reason(out.docker_config); !why.empty()) {
      m.report("docker_config", why);
    }
  }
  if (read_string(m, "registry", out.registry)) {
    auto a = split_authority(out.registry);
    const bool host_ok = a && (a->bracketed ? is_ipv6(a->host) : is_host_name(a->host));
    if (!host_ok || (a->port && !parse_port(*a->port, 1))) {
      m.wrong_type("registry", "a registry host like us-docker.pkg.dev or host:port");
    } else {
      out.registry = to_lower(out.registry);
    }
  }
  if (read_string(m, "helper_dir", out.helper_dir)) {
    struct stat st {};
    if (out.helper_dir.empty() || out.helper_dir.front() != '/') {
      m.report("helper_dir", "must be an absolute path");
    } else if (::stat(out.helper_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      m.report("helper_dir", quote(out.helper_dir) + " is not a directory");
    }
  }
  read_duration(m, "helper_timeout", out.helper_timeout, false);
}

void read_auth(problem_list& problems, const YAML::Node& node, const std::string& path, int line,
               upstream_auth& out) {
  mapping m(problems, node, path,
            {"type", "username", "password_file", "password_env", "metadata_url", "docker_config",
             "registry", "helper_dir", "helper_timeout", "realm_hosts"},
            line);
  if (!m.valid()) return;
  if (!read_enum(m, "type", out.type,
                 {{"anonymous", auth_type::anonymous},
                  {"basic", auth_type::basic},
                  {"gce_metadata", auth_type::gce_metadata},
                  {"docker_config", auth_type::docker_config}})) {
    return;  // which other keys belong depends on the type
  }
  read_realm_hosts(problems, m, out);
  if (misplaced_auth_keys(m, out.type)) return;

  switch (out.type) {
    case auth_type::anonymous:
      return;
    case auth_type::basic:
      read_basic_auth(problems, m, path, out);
      return;
    case auth_type::gce_metadata:
      read_gce_metadata_auth(m, out);
      return;
    case auth_type::docker_config:
      read_docker_config_auth(m, out);
      return;
  }
}

void read_timeouts(problem_list& problems, const mapping& m, upstream_timeouts& out) {
  const YAML::Node* timeouts = m.find("timeouts");
  if (timeouts == nullptr) return;
  mapping t(problems, *timeouts, m.child("timeouts"), {"connect", "response", "read", "body"},
            m.key_line("timeouts"));
  read_duration(t, "connect", out.connect, false);
  read_duration(t, "response", out.response, false);
  read_duration(t, "read", out.read, false);
  read_duration(t, "body", out.body, false);
}

void read_mirror(problem_list& problems, const YAML::Node& node, const std::string& path,
                 mirror& out) {
  mapping m(problems, node, path, {"url", "ca_file", "auth", "timeouts", "resolve"});
  if (!m.valid()) return;
  read_url(m, {out.url, out.scheme, out.host, out.port});
  if (read_string(m, "ca_file", out.ca_file)) check_file(m, "ca_file", out.ca_file);
  if (const YAML::Node* auth = m.find("auth")) {
    read_auth(problems, *auth, m.child("auth"), m.key_line("auth"), out.auth);
  }
  read_timeouts(problems, m, out.timeouts);
  read_bool(m, "resolve", out.resolve);
}

// `mirrors`, `mirror_select` and `mirror_breaker` of one upstream.
void read_mirrors(problem_list& problems, const mapping& m, upstream& u) {
  read_enum(m, "mirror_select", u.mirror_select,
            {{"ordered", mirror_selection::ordered}, {"hash", mirror_selection::hash}});
  if (const YAML::Node* breaker = m.find("mirror_breaker")) {
    mapping b(problems, *breaker, m.child("mirror_breaker"), {"failures", "open_for"},
              m.key_line("mirror_breaker"));
    read_uint(b, "failures", u.breaker.failures, 1, 1000);
    read_duration(b, "open_for", u.breaker.open_for, false);
  }
  const YAML::Node* mirrors = m.find("mirrors");
  if (mirrors == nullptr) return;
  const std::string path = m.child("mirrors");
  if (!expect_list(problems, *mirrors, path, m.key_line("mirrors"))) return;
  constexpr std::size_t max_mirrors = 16;
  if (mirrors->size() > max_mirrors) {
    m.report("mirrors", "at most " + std::to_string(max_mirrors) + " mirrors per upstream");
    return;
  }
  u.mirrors.resize(mirrors->size());
  std::map<std::string, std::string> seen;  // scheme://host:port → where it was set
  for (std::size_t i = 0; i < mirrors->size(); ++i) {
    const std::string mpath = index_path(path, i);
    read_mirror(problems, (*mirrors)[i], mpath, u.mirrors[i]);
    const mirror& x = u.mirrors[i];
    if (x.host.empty()) continue;
    const std::string key = x.scheme + "://" + x.host + ":" + std::to_string(x.port);
    if (x.host == u.host && x.port == u.port && x.scheme == u.scheme) {
      problems.add(mpath + ".url", line_of((*mirrors)[i]), "is the upstream itself");
    } else if (auto [it, fresh] = seen.emplace(key, mpath); !fresh) {
      problems.add(mpath + ".url", line_of((*mirrors)[i]), "is already " + it->second);
    }
  }
}

// `access` and `access_ttl` of one upstream.
void read_access(const mapping& m, upstream& u) {
  read_enum(m, "access", u.access, {{"node", access_mode::node}, {"client", access_mode::client}});
  read_duration(m, "access_ttl", u.access_ttl, false);
  constexpr auto longest = std::chrono::hours(1);
  if (u.access_ttl > longest) m.report("access_ttl", "must be at most 1h");
  if (u.access_ttl > duration::zero() && u.access_ttl < std::chrono::seconds(1))
    m.report("access_ttl", "must be at least 1s");
}

// Where each upstream's routing names are written, for cross-upstream checks.
struct upstream_lines {
  int name = 0;
  int access = 0;
  int is_default = 0;
  std::vector<int> aliases;
};

void read_upstream(problem_list& problems, const YAML::Node& node, const std::string& path,
                   upstream& u, upstream_lines& lines) {
  mapping m(problems, node, path,
            {"name", "url", "default", "aliases", "ca_file", "auth", "timeouts", "retry",
             "max_idle_connections", "warm_connections", "max_redirects", "redirect_reuse",
             "allow_internal_redirects", "mirrors", "mirror_select", "mirror_breaker", "access",
             "access_ttl"});
  if (!m.valid()) return;

  if (read_string(m, "name", u.name, true)) {
    lines.name = m.key_line("name");
    if (!is_path_component(u.name)) {
      m.report("name",
               "must be lowercase letters and digits separated by '.', '_', '__' or '-', "
               "got " +
                   quote(u.name));
      u.name.clear();  // keep it out of the uniqueness check
    }
  }
  read_url(m, {u.url, u.scheme, u.host, u.port});
  read_bool(m, "default", u.is_default);
  lines.is_default = m.key_line("default");

  if (const YAML::Node* aliases = m.find("aliases")) {
    const std::string apath = m.child("aliases");
    if (expect_list(problems, *aliases, apath, m.key_line("aliases"))) {
      for (std::size_t i = 0; i < aliases->size(); ++i) {
        const YAML::Node& alias = (*aliases)[i];
        constexpr std::string_view expected = "a registry host like index.docker.io or host:port";
        if (!alias.IsScalar()) {
          problems.wrong_type(index_path(apath, i), line_of(alias), alias, expected);
          continue;
        }
        auto a = split_authority(alias.Scalar());
        bool host_ok = a && (a->bracketed ? is_ipv6(a->host) : is_host_name(a->host));
        if (!host_ok || (a->port && !parse_port(*a->port, 1))) {
          problems.wrong_type(index_path(apath, i), line_of(alias), alias, expected);
          continue;
        }
        u.aliases.push_back(to_lower(alias.Scalar()));
        lines.aliases.push_back(line_of(alias));
      }
    }
  }

  if (read_string(m, "ca_file", u.ca_file)) check_file(m, "ca_file", u.ca_file);
  if (const YAML::Node* auth = m.find("auth")) {
    read_auth(problems, *auth, m.child("auth"), m.key_line("auth"), u.auth);
  }
  read_timeouts(problems, m, u.timeouts);
  if (const YAML::Node* retry = m.find("retry")) {
    mapping r(problems, *retry, m.child("retry"),
              {"attempts", "backoff", "max_backoff", "max_retry_after"}, m.key_line("retry"));
    read_uint(r, "attempts", u.retry.attempts, 1, 10);
    read_duration(r, "backoff", u.retry.backoff, true);
    read_duration(r, "max_backoff", u.retry.max_backoff, true);
    read_duration(r, "max_retry_after", u.retry.max_retry_after, true);
    if (u.retry.max_backoff < u.retry.backoff) {
      if (r.find("max_backoff") != nullptr) {
        r.report("max_backoff", "must not be shorter than backoff");
      } else {
        u.retry.max_backoff = u.retry.backoff;  // only backoff was set: it is the cap too
      }
    }
  }
  read_uint(m, "max_idle_connections", u.max_idle_connections, 0, 1024);
  read_uint(m, "warm_connections", u.warm_connections, 0, 64);
  read_uint(m, "max_redirects", u.max_redirects, 0, 20);
  read_duration(m, "redirect_reuse", u.redirect_reuse, true);
  read_bool(m, "allow_internal_redirects", u.allow_internal_redirects);
  read_mirrors(problems, m, u);
  read_access(m, u);
  lines.access = m.key_line("access");
}

// Names and aliases share one namespace (both select an upstream); at most one default.
void check_upstreams(problem_list& problems, const std::vector<upstream>& ups,
                     const std::vector<upstream_lines>& lines) {
  std::map<std::string, std::string> taken;  // lowercase routing name → where it was set
  auto claim = [&](const std::string& value, std::string path, int line) {
    auto [it, inserted] = taken.emplace(to_lower(value), path);
    if (!inserted) {
      problems.add(std::move(path), line, quote(value) + " is already used by " + it->second);
    }
  };
  const upstream* first_default = nullptr;
  std::string first_default_path;
  for (std::size_t i = 0; i < ups.size(); ++i) {
    const std::string path = index_path("upstreams", i);
    if (!ups[i].name.empty()) claim(ups[i].name, path + ".name", lines[i].name);
    for (std::size_t j = 0; j < ups[i].aliases.size(); ++j) {
      claim(ups[i].aliases[j], index_path(path + ".aliases", j), lines[i].aliases[j]);
    }
    if (ups[i].is_default) {
      if (first_default == nullptr) {
        first_default = &ups[i];
        first_default_path = path;
      } else {
        problems.add(path + ".default", lines[i].is_default,
                     "only one upstream may be the default; " + first_default_path + " already is");
      }
    }
  }
}

// `mode: lazy`, measured with containerd + the stargz snapshotter (docs/benchmarks.md, time to
// start): chunks near the snapshotter's reads (50 000-byte aligned, 50 KB-2 MB), no fetch of
// the rest of a layer after a range read (the snapshotter's own background fetch reads every
// layer, and a blob stored whole is verified from the store), no whole layers for a manifest
// without a profile, and recording that ends before the background fetch begins.
void apply_lazy_defaults(config& cfg) {
  cfg.cache.chunk_size = 256 * 1024;
  cfg.cache.complete_partial = false;
  cfg.prefetch.eager_layers = eager_mode::never;
  cfg.prefetch.quiet = std::chrono::seconds(3);
}

config parse(problem_list& problems, const YAML::Node& root) {
  config cfg;
  cfg.server.listen.push_back(listener{"127.0.0.1", 5000, std::nullopt});
  mapping top(problems, root, "",
              {"mode", "server", "admin", "log", "cache", "prefetch", "upstreams"});
  if (!top.valid()) return cfg;
  read_enum(top, "mode", cfg.mode, {{"pull", node_mode::pull}, {"lazy", node_mode::lazy}});
  if (cfg.mode == node_mode::lazy) apply_lazy_defaults(cfg);

  if (const YAML::Node* server = top.find("server")) {
    read_server(problems, *server, top.key_line("server"), cfg.server);
  }
  if (const YAML::Node* admin = top.find("admin")) {
    read_admin(problems, *admin, top.key_line("admin"), cfg.admin);
  }
  if (const YAML::Node* log = top.find("log")) {
    mapping m(problems, *log, "log", {"level", "access"}, top.key_line("log"));
    read_bool(m, "access", cfg.log.access);
    read_enum(m, "level", cfg.log.level,
              {{"debug", log_level::debug},
               {"info", log_level::info},
               {"warn", log_level::warn},
               {"error", log_level::error}});
  }
  if (const YAML::Node* cache = top.find("cache")) {
    read_cache(problems, *cache, top.key_line("cache"), cfg.cache);
  }
  if (const YAML::Node* prefetch = top.find("prefetch")) {
    read_prefetch(problems, *prefetch, top.key_line("prefetch"), cfg.prefetch);
  }

  const YAML::Node* ups = top.find("upstreams");
  if (ups == nullptr) {
    top.missing("upstreams", "at least one upstream is required");
    return cfg;
  }
  if (!expect_list(problems, *ups, "upstreams", top.key_line("upstreams"))) return cfg;
  if (ups->size() == 0) {
    top.report("upstreams", "at least one upstream is required");
    return cfg;
  }
  std::vector<upstream_lines> lines(ups->size());
  cfg.upstreams.resize(ups->size());
  for (std::size_t i = 0; i < ups->size(); ++i) {
    read_upstream(problems, (*ups)[i], index_path("upstreams", i), cfg.upstreams[i], lines[i]);
  }
  check_upstreams(problems, cfg.upstreams, lines);
  for (std::size_t i = 0; i < cfg.upstreams.size(); ++i) {
    if (cfg.upstreams[i].access == access_mode::client && !cfg.server.client_token_file.empty()) {
      problems.add(index_path("upstreams", i) + ".access", lines[i].access,
                   "client cannot be combined with server.client_auth: both take the client's "
                   "Authorization header");
    }
  }
  return cfg;
}

std::string describe_problems(const std::string& source, const std::vector<problem>& problems) {
  std::string out = source + ": " + std::to_string(problems.size()) +
                    (problems.size() == 1 ? " problem" : " problems");
  for (const problem& p : problems) {
    out += '\n';
    out += p.to_string();
  }
  return out;
}

}  // namespace

bool is_loopback(std::string_view host) { return host == "::1" || host.starts_with("127."); }

bool is_image_reference(std::string_view text) {
  // Cheap bound before any work: name + ':' + tag + '@' + longest digest.
  if (text.empty() || text.size() > max_reference_name + 1 + 128 + 1 + 7 + 128) return false;
  std::string_view name = text;
  if (const auto at = text.find('@'); at != std::string_view::npos) {
    if (!is_reference_digest(text.substr(at + 1))) return false;
    name = text.substr(0, at);
  }
  const auto last_slash = name.rfind('/');
  const auto last_colon = name.rfind(':');
  if (last_colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || last_colon > last_slash)) {
    if (!is_reference_tag(name.substr(last_colon + 1))) return false;
    name = name.substr(0, last_colon);
  }
  if (name.empty() || name.size() > max_reference_name) return false;

  std::string_view registry = "docker.io";
  std::string_view path = name;
  if (const auto first_slash = name.find('/'); first_slash != std::string_view::npos) {
    const auto first = name.substr(0, first_slash);
    if (first.find_first_of(".:") != std::string_view::npos || first == "localhost") {
      if (!is_reference_registry(first)) return false;
      if (first != "index.docker.io") registry = first;
      path = name.substr(first_slash + 1);
    }
  }
  // Docker Hub's single-component names get "library/"; the 255-byte limit holds for the
  // normalised "registry/repository".
  std::string repository;
  if (registry == "docker.io" && path.find('/') == std::string_view::npos) repository = "library/";
  repository += path;
  return is_reference_repository(repository) &&
         registry.size() + 1 + repository.size() <= max_reference_name;
}

const upstream* config::default_upstream() const {
  for (const upstream& u : upstreams) {
    if (u.is_default) return &u;
  }
  return nullptr;
}

std::string problem::to_string() const {
  std::string out = path.empty() ? message : path + ": " + message;
  if (line > 0) out += " (line " + std::to_string(line) + ")";
  return out;
}

invalid_config::invalid_config(const std::string& source, std::vector<problem> problems)
    : std::runtime_error(describe_problems(source, problems)), problems_(std::move(problems)) {}

config load_string(std::string_view yaml, std::string_view source) {
  const std::string text(yaml);
  YAML::Node root;
  std::size_t documents = 0;
  int second_line = 0;
  try {
    root = YAML::Load(text);  // the first document only
    documents = count_documents(text, 2, second_line);
  } catch (const YAML::Exception& e) {
    int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    throw invalid_config(std::string(source), {problem{"", line, "invalid YAML: " + e.msg}});
  }
  if (documents == 0 || root.IsNull()) {
    int line = documents == 0 ? 0 : line_of(root);
    throw invalid_config(std::string(source), {problem{"", line, "the document is empty"}});
  }
  if (documents > 1) {
    throw invalid_config(
        std::string(source),
        {problem{"", second_line, "expected one YAML document, found more than one"}});
  }
  problem_list problems;
  config cfg;
  try {
    cfg = parse(problems, root);
  } catch (const YAML::Exception& e) {
    // Not expected from reading an already parsed tree; reported rather than escaping as a
    // yaml-cpp type.
    problems.add("", e.mark.is_null() ? 0 : e.mark.line + 1, "invalid YAML: " + e.msg);
  }
  if (!problems.empty()) throw invalid_config(std::string(source), problems.take());
  return cfg;
}

config load_file(const std::string& path) {
  std::string error;
  constexpr std::size_t limit = 16 * mib;
  auto text = read_small_file(path, limit, error);
  if (!text) throw invalid_config(path, {problem{"", 0, error}});
  return load_string(*text, path);
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && is_digit(text[i])) ++i;
  auto whole = parse_uint(text.substr(0, i));
  if (!whole) return std::nullopt;

  std::string_view fraction;
  if (i < text.size() && text[i] == '.') {
    std::size_t start = ++i;
    while (i < text.size() && is_digit(text[i])) ++i;
    fraction = text.substr(start, i - start);
    // 18 digits keep fraction × unit within 128 bits; nobody needs more.
    if (fraction.empty() || fraction.size() > 18) return std::nullopt;
  }

  struct unit {
    std::string_view name;
    std::uint64_t bytes;
  };
  static constexpr unit units[] = {
      {"", 1},
      {"B", 1},
      {"KB", 1000},
      {"kB", 1000},
      {"MB", 1000ULL * 1000},
      {"GB", 1000ULL * 1000 * 1000},
      {"TB", 1000ULL * 1000 * 1000 * 1000},
      {"KiB", 1ULL << 10},
      {"MiB", 1ULL << 20},
      {"GiB", 1ULL << 30},
      {"TiB", 1ULL << 40},
  };
  const std::string_view suffix = text.substr(i);
  const auto* u = std::find_if(std::begin(units), std::end(units),
                               [&](const unit& x) { return x.name == suffix; });
  if (u == std::end(units)) return std::nullopt;
  if (!fraction.empty() && u->bytes == 1) return std::nullopt;  // no fractions of a byte

  std::uint64_t result = 0;
  if (__builtin_mul_overflow(*whole, u->bytes, &result)) return std::nullopt;
  if (!fraction.empty()) {
    uint128 numerator = 0;
    uint128 denominator = 1;
    for (char c : fraction) {
      numerator = numerator * 10 + static_cast<unsigned>(c - '0');
      denominator *= 10;
    }
    // Rounded down: a fraction of a byte is dropped. Always below u->bytes, so fits.
    auto extra = static_cast<std::uint64_t>(numerator * u->bytes / denominator);
    if (__builtin_add_overflow(result, extra, &result)) return std::nullopt;
  }
  return result;
}

std::optional<duration> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  using rep = duration::rep;
  rep total = 0;
  int previous_rank = 4;  // units must strictly decrease: h, m, s, ms
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t start = i;
    while (i < text.size() && is_digit(text[i])) ++i;
    auto count = parse_uint(text.substr(start, i - start));
    if (!count || *count > static_cast<std::uint64_t>(std::numeric_limits<rep>::max())) {
      return std::nullopt;
    }
    rep scale = 0;
    int rank = 0;
    if (text.substr(i, 2) == "ms") {
      scale = 1;
      rank = 0;
      i += 2;
    } else if (i < text.size() && text[i] == 's') {
      scale = 1000;
      rank = 1;
      ++i;
    } else if (i < text.size() && text[i] == 'm') {
      scale = rep{60} * 1000;
      rank = 2;
      ++i;
    } else if (i < text.size() && text[i] == 'h') {
      scale = rep{60} * 60 * 1000;
      rank = 3;
      ++i;
    } else {
      return std::nullopt;
    }
    if (rank >= previous_rank) return std::nullopt;
    previous_rank = rank;
    rep part = 0;
    if (__builtin_mul_overflow(static_cast<rep>(*count), scale, &part) ||
        __builtin_add_overflow(total, part, &total)) {
      return std::nullopt;
    }
  }
  return duration{total};
}

}  // namespace layercache::config
