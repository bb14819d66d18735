#include "server/auth.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

namespace layercache::server {
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

void token_cache::store(std::string_view upstream, std::string_view scope, std::string token,
                        std::chrono::seconds lifetime, clock::time_point now) {
  // Refresh early: at 90% of the lifetime, and at least 5 s before expiry.
  auto early = std::max<std::chrono::seconds>(lifetime / 10, std::chrono::seconds(5));
  auto usable = lifetime > early ? lifetime - early : std::chrono::seconds(0);
  std::lock_guard lock(mutex_);
  entries_[key_of(upstream, scope)] = entry{std::move(token), now + usable};
}

void token_cache::erase(std::string_view upstream, std::string_view scope) {
  std::lock_guard lock(mutex_);
  entries_.erase(key_of(upstream, scope));
}

std::optional<token_response> parse_token_response(std::string_view json) {
  boost::system::error_code ec;
  boost::json::parse_options opts;
  opts.max_depth = 16;
  const auto v = boost::json::parse(json, ec, {}, opts);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
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

bool realm_host_allowed(const config::upstream& u, std::string_view realm_host) {
  const std::string realm = lower(realm_host);
  const std::string host = lower(u.host);
  if (realm == host) return true;
  if (is_ip_literal(host) || is_ip_literal(realm)) return false;
  const auto dot = host.find('.');
  if (dot == std::string::npos) return false;
  const std::string parent = host.substr(dot + 1);
  // A parent must itself be a domain (contain a dot): "example.com", not "com".
  if (parent.find('.') == std::string::npos) return false;
  return realm == parent || (realm.size() > parent.size() && realm.ends_with("." + parent));
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

}  // namespace layercache::server
