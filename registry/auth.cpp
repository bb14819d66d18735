#include "registry/auth.hpp"

#include <arpa/inet.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cstdint>

namespace layercache::registry {
namespace {

std::string key_of(std::string_view upstream, std::string_view scope) {
  std::string k(upstream);
  k += '\n';
  k += scope;
  return k;
}

bool is_ip_literal(std::string_view host) {
  const std::string h(host);
  unsigned char buf[16];
  return inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

std::optional<std::string> token_cache::find(std::string_view upstream, std::string_view scope,
                                             clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key_of(upstream, scope));
  if (it == entries_.end()) return std::nullopt;
  if (now >= it->second.refresh_at) {
    entries_.erase(it);
    return std::nullopt;
  }
  return it->second.token;
}

std::chrono::seconds usable_lifetime(std::chrono::seconds lifetime) {
  if (lifetime <= std::chrono::seconds(0)) return std::chrono::seconds(0);
  auto early = std::max<std::chrono::seconds>(lifetime / 10, std::chrono::seconds(5));
  early = std::min<std::chrono::seconds>(early, lifetime / 2);
  return lifetime - early;
}

void token_cache::store(std::string_view upstream, std::string_view scope, std::string token,
                        std::chrono::seconds lifetime, clock::time_point now) {
  clock::duration usable = usable_lifetime(lifetime);
  if (longest_) usable = std::min(usable, *longest_);
  std::lock_guard lock(mutex_);
  entries_[key_of(upstream, scope)] = entry{std::move(token), now + usable};
}

void token_cache::erase(std::string_view upstream, std::string_view scope) {
  std::lock_guard lock(mutex_);
  entries_.erase(key_of(upstream, scope));
}

void token_cache::erase(std::string_view upstream, std::string_view scope, std::string_view token) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key_of(upstream, scope));
  if (it != entries_.end() && it->second.token == token) entries_.erase(it);
}

namespace {

// `json` parsed with nesting at most `max_depth`, when it is an object.
std::optional<boost::json::value> parse_object(std::string_view json, unsigned max_depth) {
  boost::system::error_code ec;
  boost::json::parse_options opts;
  opts.max_depth = max_depth;
  auto v = boost::json::parse(json, ec, {}, opts);
  if (ec || !v.is_object()) return std::nullopt;
  return v;
}

}  // namespace

std::optional<token_response> parse_token_response(std::string_view json) {
  const auto v = parse_object(json, 16);
  if (!v) return std::nullopt;
  const auto& o = v->as_object();
  token_response r;
  for (const char* key : {"token", "access_token"}) {
    if (auto it = o.find(key);
        it != o.end() && it->value().is_string() && !it->value().as_string().empty()) {
      r.token = std::string(it->value().as_string());
      break;
    }
  }
  if (r.token.empty()) return std::nullopt;
  if (auto it = o.find("expires_in"); it != o.end()) {
    const auto& e = it->value();
    std::int64_t secs = 0;
    if (e.is_int64()) secs = e.as_int64();
    if (e.is_uint64())
      secs = static_cast<std::int64_t>(std::min<std::uint64_t>(e.as_uint64(), 86400));
    if (e.is_double()) secs = static_cast<std::int64_t>(e.as_double());
    // The spec's minimum is 60 s; tokens claiming less are used for what they say.
    if (secs > 0) r.expires_in = std::chrono::seconds(std::min<std::int64_t>(secs, 86400));
  }
  return r;
}

std::optional<token_response> parse_metadata_token(std::string_view json) {
  const auto v = parse_object(json, 16);
  if (!v) return std::nullopt;
  const auto& o = v->as_object();
  auto it = o.find("access_token");
  if (it == o.end() || !it->value().is_string() || it->value().as_string().empty()) {
    return std::nullopt;
  }
  if (auto t = o.find("token_type"); t != o.end()) {
    if (!t->value().is_string() || lower(t->value().as_string()) != "bearer") return std::nullopt;
  }
  return parse_token_response(json);
}

namespace {

// A realm_hosts entry: "host", "*.domain", "[v6]" or "::1", each with an optional ":port".
struct host_pattern {
  std::string host;
  std::optional<std::uint16_t> port;
};

host_pattern parse_pattern(std::string_view entry) {
  host_pattern p;
  if (entry.starts_with('[')) {
    const auto close = entry.find(']');
    p.host = std::string(entry.substr(1, close - 1));
    entry.remove_prefix(std::min(entry.size(), close + 1));
  } else if (entry.find(':') == entry.rfind(':') && entry.find(':') != std::string_view::npos) {
    p.host = std::string(entry.substr(0, entry.find(':')));
    entry.remove_prefix(entry.find(':'));
  } else {
    p.host = std::string(entry);  // no port, or a bare IPv6 address
    entry = {};
  }
  if (entry.starts_with(':')) {
    unsigned v = 0;
    for (char c : entry.substr(1)) v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > 0 && v <= 65535) p.port = static_cast<std::uint16_t>(v);
  }
  return p;
}

bool host_matches(const std::string& pattern, const std::string& host) {
  if (pattern.starts_with("*.")) {
    const std::string_view suffix = std::string_view(pattern).substr(1);  // ".example.com"
    return host.size() > suffix.size() && host.ends_with(suffix);
  }
  return host == pattern;
}

}  // namespace

bool realm_allowed(const config::upstream& u, const realm_location& realm) {
  const std::string scheme = lower(realm.scheme);
  if (scheme != "https" && scheme != "http") return false;
  // Credentials that travel encrypted to the upstream never travel in clear to its realm.
  if (lower(u.scheme) == "https" && scheme != "https") return false;
  const std::string host = lower(realm.host);
  const std::string own = lower(u.host);
  if (host == own && realm.port == u.port) return true;
  if (!u.auth.realm_hosts.empty()) {
    const std::uint16_t default_port = scheme == "https" ? 443 : 80;
    for (const auto& entry : u.auth.realm_hosts) {
      const auto p = parse_pattern(entry);
      if (host_matches(p.host, host) && realm.port == p.port.value_or(default_port)) return true;
    }
    return false;
  }
  if (realm.port != u.port) return false;
  if (is_ip_literal(own) || is_ip_literal(host)) return false;
  const auto dot = own.find('.');
  if (dot == std::string::npos) return false;
  const std::string parent = own.substr(dot + 1);
  // A parent must itself be a domain (contain a dot): "example.com", not "com".
  if (parent.find('.') == std::string::npos) return false;
  return host == parent || (host.size() > parent.size() && host.ends_with("." + parent));
}

std::string pull_scope(std::string_view repository) {
  std::string s = "repository:";
  s += repository;
  s += ":pull";
  return s;
}

std::string basic_authorization(std::string_view user, std::string_view password) {
  static constexpr char table[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string in(user);
  in += ':';
  in += password;
  std::string out = "Basic ";
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                       (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += table[(v >> 6) & 63];
    out += table[v & 63];
  }
  if (i + 1 == in.size()) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const unsigned v =
        (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += table[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  auto value_of = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int padding = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + static_cast<std::size_t>(k)];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++padding;
        continue;
      }
      if (padding > 0) return std::nullopt;  // data after padding
      v[k] = value_of(c);
      if (v[k] < 0) return std::nullopt;
    }
    const std::uint32_t n =
        (static_cast<std::uint32_t>(v[0]) << 18) | (static_cast<std::uint32_t>(v[1]) << 12) |
        (static_cast<std::uint32_t>(v[2]) << 6) | static_cast<std::uint32_t>(v[3]);
    out += static_cast<char>((n >> 16) & 0xff);
    if (padding < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (padding < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

namespace {

bool valid_helper_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

std::optional<std::string> string_member(const boost::json::object& o, std::string_view key,
                                         bool& malformed) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return std::nullopt;
  if (!it->value().is_string()) {
    malformed = true;
    return std::nullopt;
  }
  return std::string(it->value().as_string());
}

}  // namespace

std::string docker_registry_key(std::string_view text) {
  std::string s = lower(text);
  for (std::string_view scheme : {"https://", "http://"}) {
    if (s.starts_with(scheme)) {
      s.erase(0, scheme.size());
      break;
    }
  }
  if (auto slash = s.find('/'); slash != std::string::npos) s.erase(slash);
  if (s == "docker.io" || s == "registry-1.docker.io" || s == "index.docker.io" ||
      s == "registry.hub.docker.com") {
    return "index.docker.io";
  }
  return s;
}

std::string docker_helper_server_url(std::string_view key) {
  if (key == "index.docker.io") return "https://index.docker.io/v1/";
  return std::string(key);
}

namespace {

// auths["<name>"] of a Docker config file.
std::optional<docker_auth_entry> parse_auth_entry(const std::string& name,
                                                  const boost::json::object& o,
                                                  std::string& error) {
  docker_auth_entry entry;
  bool malformed = false;
  if (auto encoded = string_member(o, "auth", malformed); encoded && !encoded->empty()) {
    auto decoded = base64_decode(*encoded);
    const auto colon = decoded ? decoded->find(':') : std::string::npos;
    if (!decoded || colon == std::string::npos) {
      error = "auths[\"" + name + "\"].auth is not base64 of user:password";
      return std::nullopt;
    }
    entry.username = decoded->substr(0, colon);
    entry.password = decoded->substr(colon + 1);
  }
  if (auto user = string_member(o, "username", malformed); user && !user->empty()) {
    entry.username = *user;
  }
  if (auto password = string_member(o, "password", malformed); password && !password->empty()) {
    entry.password = *password;
  }
  if (auto token = string_member(o, "identitytoken", malformed); token) {
    entry.identity_token = *token;
  }
  if (malformed) {
    error = "auths[\"" + name + "\"] has a field that is not a string";
    return std::nullopt;
  }
  return entry;
}

// The "auths" member (`auths`, not null) into `out`; false with `error` when malformed.
bool parse_auths(const boost::json::value& auths, docker_config_file& out, std::string& error) {
  if (!auths.is_object()) {
    error = "\"auths\" is not an object";
    return false;
  }
  for (const auto& [registry, value] : auths.as_object()) {
    const std::string name(registry);
    if (!value.is_object()) {
      error = "auths[\"" + name + "\"] is not an object";
      return false;
    }
    auto entry = parse_auth_entry(name, value.as_object(), error);
    if (!entry) return false;
    out.auths.insert_or_assign(docker_registry_key(name), std::move(*entry));
  }
  return true;
}

// The "credHelpers" member (`helpers`, not null) into `out`; false with `error` when malformed.
bool parse_cred_helpers(const boost::json::value& helpers, docker_config_file& out,
                        std::string& error) {
  if (!helpers.is_object()) {
    error = "\"credHelpers\" is not an object";
    return false;
  }
  for (const auto& [registry, value] : helpers.as_object()) {
    if (!value.is_string() || !valid_helper_name(value.as_string())) {
      error = "credHelpers[\"" + std::string(registry) + "\"] is not a helper name";
      return false;
    }
    out.cred_helpers.insert_or_assign(docker_registry_key(registry),
                                      std::string(value.as_string()));
  }
  return true;
}

}  // namespace

std::optional<docker_config_file> parse_docker_config(std::string_view json, std::string& error) {
  boost::system::error_code ec;
  boost::json::parse_options opts;
  opts.max_depth = 32;
  const auto v = boost::json::parse(json, ec, {}, opts);
  if (ec) {
    error = "not valid JSON: " + ec.message();
    return std::nullopt;
  }
  if (!v.is_object()) {
    error = "not a JSON object";
    return std::nullopt;
  }
  const auto& root = v.as_object();
  docker_config_file out;
  if (auto it = root.find("auths"); it != root.end() && !it->value().is_null()) {
    if (!parse_auths(it->value(), out, error)) return std::nullopt;
  }
  if (auto it = root.find("credHelpers"); it != root.end() && !it->value().is_null()) {
    if (!parse_cred_helpers(it->value(), out, error)) return std::nullopt;
  }
  bool malformed = false;
  if (auto store = string_member(root, "credsStore", malformed); store && !store->empty()) {
    if (!valid_helper_name(*store)) {
      error = "\"credsStore\" is not a helper name";
      return std::nullopt;
    }
    out.creds_store = *store;
  }
  if (malformed) {
    error = "\"credsStore\" is not a string";
    return std::nullopt;
  }
  return out;
}

docker_credential_plan plan_docker_credentials(const docker_config_file& file,
                                               std::string_view key) {
  docker_credential_plan plan;
  if (auto it = file.cred_helpers.find(key); it != file.cred_helpers.end()) {
    plan.helper = it->second;
  } else if (!file.creds_store.empty()) {
    plan.helper = file.creds_store;
  } else if (auto entry = file.auths.find(key); entry != file.auths.end()) {
    const auto& e = entry->second;
    if (!e.identity_token.empty() || (!e.username.empty() && !e.password.empty())) {
      plan.entry = e;
    }
  }
  return plan;
}

std::optional<docker_auth_entry> parse_helper_output(std::string_view json) {
  const auto v = parse_object(json, 8);
  if (!v) return std::nullopt;
  const auto& o = v->as_object();
  bool malformed = false;
  auto user = string_member(o, "Username", malformed);
  auto secret = string_member(o, "Secret", malformed);
  if (malformed || !secret || secret->empty()) return std::nullopt;
  docker_auth_entry entry;
  if (user && *user == "<token>") {
    entry.identity_token = std::move(*secret);
    return entry;
  }
  if (!user || user->empty()) return std::nullopt;
  entry.username = std::move(*user);
  entry.password = std::move(*secret);
  return entry;
}

}  // namespace layercache::registry
