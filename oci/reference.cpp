#include "oci/reference.hpp"

#include <arpa/inet.h>

#include <array>
#include <cstring>

namespace layercache::oci {
namespace {

constexpr std::size_t max_name_length = 255;
constexpr std::string_view default_registry = "docker.io";
constexpr std::string_view legacy_default_registry = "index.docker.io";

constexpr bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

constexpr bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

// `label ('.' label)*`, label = alnum | alnum [alnum-]* alnum.
bool is_valid_host_name(std::string_view host) {
  if (host.empty()) return false;
  std::size_t i = 0;
  while (true) {
    const std::size_t start = i;
    while (i < host.size() && (is_alnum(host[i]) || host[i] == '-')) ++i;
    if (i == start || host[start] == '-' || host[i - 1] == '-') return false;
    if (i == host.size()) return true;
    if (host[i] != '.') return false;
    ++i;
  }
}

bool is_valid_ipv6(std::string_view addr) {
  // INET6_ADDRSTRLEN includes the terminating NUL.
  if (addr.empty() || addr.size() >= INET6_ADDRSTRLEN) return false;
  std::array<char, INET6_ADDRSTRLEN> text{};
  std::memcpy(text.data(), addr.data(), addr.size());
  unsigned char out[16];
  return inet_pton(AF_INET6, text.data(), out) == 1;
}

bool is_valid_port(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (!is_digit(c)) return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value >= 1 && value <= 65535;
}

}  // namespace

bool is_valid_repository(std::string_view name) {
  if (name.empty() || name.size() > max_name_length) return false;
  const std::size_t n = name.size();
  std::size_t i = 0;
  while (true) {
    // A component starts with an alphanumeric run.
    if (i == n || !is_lower_alnum(name[i])) return false;
    while (i < n && is_lower_alnum(name[i])) ++i;
    // Then (separator alnum-run)* up to '/' or the end.
    while (i < n && name[i] != '/') {
      switch (name[i]) {
        case '.':
          ++i;
          break;
        case '_':
          ++i;
          if (i < n && name[i] == '_') ++i;
          break;
        case '-':
          while (i < n && name[i] == '-') ++i;
          break;
        default:
          return false;
      }
      if (i == n || !is_lower_alnum(name[i])) return false;
      while (i < n && is_lower_alnum(name[i])) ++i;
    }
    if (i == n) return true;
    ++i;  // '/': another component must follow (no trailing or doubled slash)
  }
}

bool is_valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  if (!is_alnum(tag[0]) && tag[0] != '_') return false;
  for (char c : tag.substr(1)) {
    if (!is_alnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

bool is_valid_registry(std::string_view registry) {
  if (registry.empty() || registry.size() > max_name_length) return false;
  std::string_view port;
  bool has_port = false;
  if (registry.front() == '[') {
    const auto close = registry.find(']');
    if (close == std::string_view::npos) return false;
    if (!is_valid_ipv6(registry.substr(1, close - 1))) return false;
    const auto rest = registry.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      has_port = true;
      port = rest.substr(1);
    }
  } else {
    const auto colon = registry.find(':');
    if (!is_valid_host_name(registry.substr(0, colon))) return false;
    if (colon != std::string_view::npos) {
      has_port = true;
      port = registry.substr(colon + 1);
    }
  }
  return !has_port || is_valid_port(port);
}

std::optional<reference> reference::parse(std::string_view text) {
  // Cheap bound before any work: name + ':' + tag + '@' + longest digest.
  if (text.empty() || text.size() > max_name_length + 1 + 128 + 1 + 7 + 128) return std::nullopt;

  reference ref;
  std::string_view name = text;
  if (const auto at = text.find('@'); at != std::string_view::npos) {
    ref.digest = oci::digest::parse(text.substr(at + 1));
    if (!ref.digest) return std::nullopt;
    name = text.substr(0, at);
  }

  const auto last_slash = name.rfind('/');
  const auto last_colon = name.rfind(':');
  if (last_colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || last_colon > last_slash)) {
    const auto tag = name.substr(last_colon + 1);
    if (!is_valid_tag(tag)) return std::nullopt;
    ref.tag = tag;
    name = name.substr(0, last_colon);
  }
  if (name.empty() || name.size() > max_name_length) return std::nullopt;

  std::string_view path = name;
  ref.registry = default_registry;
  if (const auto first_slash = name.find('/'); first_slash != std::string_view::npos) {
    const auto first = name.substr(0, first_slash);
    if (first.find_first_of(".:") != std::string_view::npos || first == "localhost") {
      if (!is_valid_registry(first)) return std::nullopt;
      ref.registry = first == legacy_default_registry ? default_registry : first;
      path = name.substr(first_slash + 1);
    }
  }

  if (ref.registry == default_registry && path.find('/') == std::string_view::npos) {
    ref.repository.reserve(8 + path.size());
    ref.repository = "library/";
  }
  ref.repository += path;
  if (!is_valid_repository(ref.repository)) return std::nullopt;
  // The limit holds for the normalised name str() prints ("docker.io/library/" included), or a
  // long Docker Hub name would parse while parse(str()) refused it.
  if (ref.registry.size() + 1 + ref.repository.size() > max_name_length) return std::nullopt;

  if (ref.tag.empty() && !ref.digest) ref.tag = "latest";
  return ref;
}

std::string reference::str() const {
  std::string out;
  out.reserve(registry.size() + repository.size() + tag.size() + 140);
  out += registry;
  out += '/';
  out += repository;
  if (!tag.empty()) {
    out += ':';
    out += tag;
  }
  if (digest) {
    out += '@';
    out += digest->str();
  }
  return out;
}

}  // namespace layercache::oci
