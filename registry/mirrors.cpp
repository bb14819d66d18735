#include "registry/mirrors.hpp"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>

#include "log/log.hpp"
#include "metrics/metrics.hpp"

namespace layercache::registry {
namespace {

std::uint64_t fnv1a(std::string_view a, std::string_view b) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  auto eat = [&h](std::string_view s) {
    for (const char c : s) {
      h ^= static_cast<unsigned char>(c);
      h *= 0x100000001b3ULL;
    }
  };
  eat(a);
  eat(std::string_view("\0", 1));
  eat(b);
  return h;
}

// splitmix64's finaliser: FNV-1a alone scores similar keys alike.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

std::string host_port(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

constexpr std::string_view via_prefix = "layercache-";

}  // namespace

std::string ns_value(const config::upstream& origin) {
  if (origin.host == "registry-1.docker.io" || origin.host == "index.docker.io") {
    return "docker.io";
  }
  const bool default_port = origin.port == (origin.scheme == "https" ? 443 : 80);
  if (default_port) {
    return origin.host.find(':') != std::string::npos ? "[" + origin.host + "]" : origin.host;
  }
  return host_port(origin.host, origin.port);
}

std::vector<std::size_t> rendezvous_order(const std::vector<std::string>& members,
                                          std::string_view key) {
  std::vector<std::pair<std::uint64_t, std::size_t>> scored;
  scored.reserve(members.size());
  for (std::size_t k = 0; k < members.size(); ++k) {
    scored.emplace_back(mix(fnv1a(members[k], key)), k);
  }
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<std::size_t> order;
  order.reserve(scored.size());
  for (const auto& s : scored) order.push_back(s.second);
  return order;
}

config::upstream mirror_endpoint(const config::upstream& origin, const config::mirror& m) {
  config::upstream e;
  e.name = "mirror " + host_port(m.host, m.port) + " of " + origin.name;
  e.url = m.url;
  e.scheme = m.scheme;
  e.host = m.host;
  e.port = m.port;
  e.ca_file = m.ca_file;
  e.auth = m.auth;
  e.timeouts = m.timeouts;
  e.retry.attempts = 1;
  e.max_idle_connections = origin.max_idle_connections;
  e.warm_connections = 0;
  e.max_redirects = origin.max_redirects;
  e.redirect_reuse = origin.redirect_reuse;
  e.allow_internal_redirects = origin.allow_internal_redirects;
  return e;
}

mirror_state::mirror_state(const config::upstream& origin, std::string via)
    : origin_(origin), ns_(ns_value(origin)), via_(std::move(via)) {
  for (const auto& m : origin.mirrors) {
    endpoints_.push_back(mirror_endpoint(origin, m));
    labels_.push_back(host_port(m.host, m.port));
    keys_.push_back(m.scheme + "://" + host_port(m.host, m.port));
  }
  metrics_.assign(endpoints_.size(), nullptr);
  health_.resize(endpoints_.size());
}

bool mirror_state::usable(std::size_t k, clock::time_point now) {
  health& h = health_[k];
  if (h.failures < origin_.breaker.failures) return true;
  // Open until open_until; then asked again (a failure opens it again at once).
  return now >= h.open_until;
}

std::vector<std::size_t> mirror_state::candidates(std::string_view digest, clock::time_point now) {
  std::vector<std::size_t> order;
  if (endpoints_.empty()) return order;
  if (origin_.mirror_select == config::mirror_selection::hash) {
    order = rendezvous_order(keys_, digest);
  } else {
    order.resize(endpoints_.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
  }
  std::lock_guard lock(mutex_);
  if (auto it = distrusted_.find(digest); it != distrusted_.end()) {
    if (now < it->second) return {};
    distrusted_.erase(it);
  }
  std::erase_if(order, [&](std::size_t k) { return !usable(k, now); });
  return order;
}

std::vector<std::size_t> mirror_state::resolvers(clock::time_point now) {
  std::vector<std::size_t> order;
  std::lock_guard lock(mutex_);
  for (std::size_t k = 0; k < endpoints_.size(); ++k) {
    if (origin_.mirrors[k].resolve && usable(k, now)) order.push_back(k);
  }
  return order;
}

void mirror_state::succeeded(std::size_t k) {
  if (auto* m = metrics_[k]) m->served();
  std::lock_guard lock(mutex_);
  health& h = health_[k];
  h.failures = 0;
  if (h.open) {
    h.open = false;
    log::info("registry", "mirror ", labels_[k], " of ", origin_.name, " answers again");
    if (auto* m = metrics_[k]) m->breaker(false);
  }
}

void mirror_state::open_breaker(std::size_t k, clock::time_point now) {
  health& h = health_[k];
  h.open_until = now + origin_.breaker.open_for;
  if (h.open) return;
  h.open = true;
  log::warn("registry", "mirror ", labels_[k], " of ", origin_.name, " failed ", h.failures,
            " times in a row: not asked for ",
            std::chrono::duration_cast<std::chrono::seconds>(origin_.breaker.open_for).count(),
            " s");
  if (auto* m = metrics_[k]) m->breaker(true);
}

void mirror_state::failed(std::size_t k, std::string_view reason, clock::time_point now) {
  if (auto* m = metrics_[k]) m->fallback(reason);
  std::lock_guard lock(mutex_);
  health& h = health_[k];
  if (h.failures < origin_.breaker.failures) ++h.failures;
  if (h.failures >= origin_.breaker.failures) open_breaker(k, now);
}

void mirror_state::passed(std::size_t k, std::string_view reason) {
  if (auto* m = metrics_[k]) m->fallback(reason);
}

void mirror_state::served(std::size_t k, const oci::digest& d) {
  std::lock_guard lock(mutex_);
  if (served_.size() >= max_tracked && !served_.contains(d.str())) served_.clear();
  served_[d.str()] |= std::uint32_t{1} << k;
}

void mirror_state::distrust(const oci::digest& d, clock::time_point now) {
  std::uint32_t who = 0;
  {
    std::lock_guard lock(mutex_);
    if (distrusted_.size() >= max_tracked)
      std::erase_if(distrusted_, [now](const auto& e) { return e.second <= now; });
    if (distrusted_.size() >= max_tracked) distrusted_.clear();
    distrusted_[d.str()] = now + distrust_for;
    if (auto it = served_.find(d.str()); it != served_.end()) {
      who = it->second;
      served_.erase(it);
    }
  }
  for (std::size_t k = 0; k < endpoints_.size(); ++k) {
    if ((who & (std::uint32_t{1} << k)) == 0) continue;
    log::warn("registry", "mirror ", labels_[k], " of ", origin_.name, " served bytes of ", d.str(),
              " that do not match it");
    if (auto* m = metrics_[k]) m->fallback("digest");
    std::lock_guard lock(mutex_);
    health_[k].failures = origin_.breaker.failures;
    open_breaker(k, now);
  }
}

bool mirror_state::breaker_open(std::size_t k, clock::time_point now) {
  std::lock_guard lock(mutex_);
  return !usable(k, now);
}

mirror_verdict judge_failure(const upstream_failure& f) {
  if (f.code == upstream_errc::timeout) return {"timeout", true};
  return {"transport", true};
}

mirror_verdict judge_status(unsigned status) {
  if (status >= 200 && status < 300) return {"", false};
  if (status == 404) return {"not_found", false};
  if (status == 508) return {"loop", true};
  return {"status", true};
}

void address_to_mirror(upstream_request& req, const mirror_state& s) {
  req.target += req.target.find('?') == std::string::npos ? "?ns=" : "&ns=";
  req.target += s.ns();
  req.headers.emplace_back(http::field::via, s.via());
}

std::string make_via() {
  std::random_device random;
  const std::uint64_t id = (std::uint64_t{random()} << 32) ^ random();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(id));
  return "1.1 " + std::string(via_prefix) + hex;
}

bool via_names_layercache(std::string_view via) {
  return via.find(via_prefix) != std::string_view::npos;
}

bool via_names(std::string_view via, std::string_view own) {
  // own is "1.1 layercache-<id>": its pseudonym is what follows the protocol.
  const auto space = own.find(' ');
  const std::string_view name = space == std::string_view::npos ? own : own.substr(space + 1);
  for (std::size_t at = via.find(name); at != std::string_view::npos; at = via.find(name, at + 1)) {
    const std::size_t end = at + name.size();
    if (end == via.size() || via[end] == ',' || via[end] == ' ' || via[end] == '\t') return true;
  }
  return false;
}

}  // namespace layercache::registry
