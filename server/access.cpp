#include "server/access.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "oci/media_types.hpp"
#include "registry/distribution.hpp"
#include "registry/mirrors.hpp"
#include "server/handlers.hpp"

namespace layercache::server {
namespace {

using steady = std::chrono::steady_clock;

// Clients presenting distinct credentials kept per gate; the least recently used beyond.
constexpr std::size_t max_presented = 256;

// `a` and `b` as one key that no other pair makes.
std::string joined(std::string_view a, std::string_view b) {
  std::string key = std::to_string(a.size());
  key.push_back(':');
  key.append(a).append(b);
  return key;
}

// The first Authorization header of `req` ("" for none).
std::string authorization_of(const request& req) {
  auto it = req.find(http::field::authorization);
  return it == req.end() ? std::string() : std::string(it->value());
}

// base64url (JWT) without padding → its bytes.
std::optional<std::string> base64url_decode(std::string_view text) {
  std::string s(text);
  for (char& c : s) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (s.size() % 4 != 0) s.push_back('=');
  return registry::base64_decode(s);
}

answer unauthorized(const registry::upstream_response& up, const std::string& repository) {
  answer a = error_answer(401, "UNAUTHORIZED",
                          "authentication required for repository " + repository +
                              " (upstream.access: client: present your registry credentials)");
  for (auto [it, end] = up.fields().equal_range(http::field::www_authenticate); it != end; ++it) {
    a.fields.insert(http::field::www_authenticate, it->value());
  }
  return a;
}

}  // namespace

bool access_book::find(table& t, const std::string& key, clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto it = t.find(key);
  if (it == t.end()) return false;
  if (it->second > now) return true;
  t.erase(it);
  return false;
}

void access_book::put(table& t, std::string key, clock::time_point until, clock::time_point now) {
  if (until <= now) return;
  std::lock_guard lock(mutex_);
  if (t.size() >= capacity_ && !t.contains(key)) {
    std::erase_if(t, [&](const auto& e) { return e.second <= now; });
    if (t.size() >= capacity_) t.clear();
  }
  auto& at = t[std::move(key)];
  at = std::max(at, until);
}

bool access_book::allowed(std::string_view credential, std::string_view repository,
                          clock::time_point now) {
  return find(allowed_, joined(credential, repository), now);
}

void access_book::allow(std::string_view credential, std::string_view repository,
                        clock::time_point until, clock::time_point now) {
  put(allowed_, joined(credential, repository), until, now);
}

bool access_book::member(std::string_view repository, const oci::digest& d, clock::time_point now) {
  return find(members_, joined(repository, d.str()), now);
}

void access_book::learn(std::string_view repository, const oci::digest& d, clock::time_point until,
                        clock::time_point now) {
  put(members_, joined(repository, d.str()), until, now);
}

std::string credential_key(std::string_view authorization) {
  if (authorization.empty()) return {};
  oci::hasher h;
  h.update(authorization);
  return std::string(h.finish().hex());
}

std::optional<std::chrono::system_clock::time_point> bearer_expiry(std::string_view authorization) {
  constexpr std::string_view bearer = "bearer ";
  if (authorization.size() <= bearer.size()) return std::nullopt;
  for (std::size_t i = 0; i < bearer.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != bearer[i]) {
      return std::nullopt;
    }
  }
  const std::string_view token = authorization.substr(bearer.size());
  const auto first = token.find('.');
  const auto second = first == std::string_view::npos ? first : token.find('.', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  const auto payload = base64url_decode(token.substr(first + 1, second - first - 1));
  if (!payload) return std::nullopt;
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(*payload, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto* exp = v.as_object().if_contains("exp");
  if (exp == nullptr) return std::nullopt;
  std::int64_t seconds = 0;
  if (exp->is_int64()) {
    seconds = exp->as_int64();
  } else if (exp->is_uint64() && exp->as_uint64() < (1ULL << 62)) {
    seconds = static_cast<std::int64_t>(exp->as_uint64());
  } else if (exp->is_double() && exp->as_double() > 0 && exp->as_double() < 1e15) {
    seconds = static_cast<std::int64_t>(exp->as_double());
  } else {
    return std::nullopt;
  }
  return std::chrono::system_clock::time_point(std::chrono::seconds(seconds));
}

std::chrono::steady_clock::duration trusted_for(std::string_view authorization,
                                                config::duration ttl,
                                                std::chrono::system_clock::time_point now) {
  steady::duration d = std::chrono::duration_cast<steady::duration>(ttl);
  if (auto exp = bearer_expiry(authorization)) {
    if (*exp <= now) return steady::duration::zero();
    d = std::min(d, std::chrono::duration_cast<steady::duration>(*exp - now));
  }
  return d;
}

access_parts::access_parts(const config::upstream& u)
    : anonymous([&] {
        config::upstream a = u;
        a.auth = config::upstream_auth{};
        a.auth.realm_hosts = u.auth.realm_hosts;
        a.mirrors.clear();
        return a;
      }()),
      none(anonymous),
      tokens(std::chrono::duration_cast<registry::token_cache::clock::duration>(u.access_ttl)) {}

access_gate::access_gate(const config::upstream& u, access_parts& shared,
                         registry::upstream_client& node, client_parts parts)
    : cfg_(u), shared_(shared), node_(node), parts_(parts) {
  anonymous_ = std::make_unique<registry::upstream_client>(
      shared_.anonymous, parts_.pool, parts_.tls, shared_.tokens, shared_.none, shared_.redirects);
  anonymous_->set_own_endpoints(parts_.own);
  anonymous_->set_metrics(parts_.metrics);
  bare_ = presenting("", "");
}

std::shared_ptr<registry::upstream_client> access_gate::presenting(
    const std::string& key, const std::string& authorization) {
  const auto now = steady::now();
  if (auto it = presented_.find(key); it != presented_.end()) {
    it->second.used = now;
    return it->second.client;
  }
  if (presented_.size() >= max_presented) {
    // Those whose checks have run out first, else the least recently used (a fill still
    // running holds its own).
    std::erase_if(presented_, [&](const auto& e) {
      return !e.first.empty() && now - e.second.used > cfg_.access_ttl;
    });
    if (presented_.size() >= max_presented) {
      auto oldest = presented_.end();
      for (auto it = presented_.begin(); it != presented_.end(); ++it) {
        if (!it->first.empty() &&
            (oldest == presented_.end() || it->second.used < oldest->second.used)) {
          oldest = it;
        }
      }
      if (oldest != presented_.end()) presented_.erase(oldest);
    }
  }
  auto client = std::make_shared<registry::upstream_client>(
      shared_.anonymous, parts_.pool, parts_.tls, shared_.tokens, shared_.none, shared_.redirects);
  client->present(authorization);
  client->set_own_endpoints(parts_.own);
  client->set_metrics(parts_.metrics);
  presented_.emplace(key, held{client, now});
  return client;
}

access_gate::admitted access_gate::serving(const std::string& repository,
                                           std::shared_ptr<registry::upstream_client> own) {
  if (shared_.book.allowed("", repository)) return admitted{anonymous_.get(), nullptr};
  if (cfg_.auth.type != config::auth_type::anonymous) return admitted{&node_, nullptr};
  auto* client = own.get();
  return admitted{client, std::move(own)};
}

asio::awaitable<access_gate::verdict> access_gate::admit_node(const request& req, const route& r,
                                                              const std::string& repository) {
  const auto digest =
      r.kind == route_kind::blob || (r.kind == route_kind::manifest && r.reference_is_digest())
          ? oci::digest::parse(r.reference)
          : std::nullopt;
  if (!digest) co_return admitted{&node_, nullptr};
  if (shared_.book.member(repository, *digest)) {
    if (parts_.metrics != nullptr) parts_.metrics->access_cached();
    co_return admitted{&node_, nullptr};
  }
  // The origin's word, not a mirror's.
  auto& origin = node_.mirrors() != nullptr ? node_.mirrors()->origin_only() : node_;
  std::optional<std::uint64_t> size;
  auto refusal = co_await check(origin, req, r, repository, &size);
  if (refusal) co_return std::move(*refusal);
  learn(repository, *digest);
  co_return admitted{&node_, nullptr, size};
}

asio::awaitable<access_gate::verdict> access_gate::admit(const request& req, const route& r,
                                                         const std::string& repository) {
  if (cfg_.access == config::access_mode::node) co_return co_await admit_node(req, r, repository);
  const std::string authorization = authorization_of(req);
  const std::string key = credential_key(authorization);
  auto own = key.empty() ? nullptr : presenting(key, authorization);
  registry::upstream_client& asking = key.empty() ? *anonymous_ : *own;
  if (r.kind != route_kind::manifest && r.kind != route_kind::blob) {
    // Listings: the upstream answers them for these credentials itself.
    co_return admitted{&asking, std::move(own)};
  }
  const auto digest = r.kind == route_kind::blob || r.reference_is_digest()
                          ? oci::digest::parse(r.reference)
                          : std::nullopt;
  auto& book = shared_.book;
  const bool known = book.allowed(key, repository) || book.allowed("", repository);
  if (known && (!digest || book.member(repository, *digest))) {
    if (parts_.metrics != nullptr) parts_.metrics->access_cached();
    co_return serving(repository, std::move(own));
  }
  std::optional<std::uint64_t> size;
  auto refusal = co_await check(asking, req, r, repository, &size);
  if (refusal && key.empty() && refusal->status != 403 && refusal->status != 404) {
    co_return co_await unauthenticated(req, r, repository, std::move(*refusal));
  }
  if (refusal) co_return std::move(*refusal);
  const auto now = steady::now();
  book.allow(key, repository, now + trusted_for(authorization, cfg_.access_ttl), now);
  if (digest) book.learn(repository, *digest, now + cfg_.access_ttl, now);
  admitted in = serving(repository, std::move(own));
  in.blob_size = size;
  co_return in;
}

asio::awaitable<std::optional<answer>> access_gate::check(registry::upstream_client& client,
                                                          const request& req, const route& r,
                                                          const std::string& repository,
                                                          std::optional<std::uint64_t>* size) {
  std::unique_ptr<registry::upstream_response> up;
  std::optional<registry::upstream_failure> failed;
  if (r.kind == route_kind::blob) {
    // parse_route let through only a valid digest.
    auto got = co_await registry::blob_size(client, repository, *oci::digest::parse(r.reference));
    if (const auto* n = std::get_if<std::uint64_t>(&got)) {
      if (size != nullptr) *size = *n;
      if (parts_.metrics != nullptr) parts_.metrics->access_check("allowed");
      co_return std::nullopt;
    }
    if (auto* f = std::get_if<registry::upstream_failure>(&got)) failed = std::move(*f);
    if (auto* u = std::get_if<std::unique_ptr<registry::upstream_response>>(&got))
      up = std::move(*u);
  } else {
    auto got = co_await registry::head_manifest(client, repository, r.reference,
                                                std::string(oci::default_manifest_accept()));
    if (auto* f = std::get_if<registry::upstream_failure>(&got)) failed = std::move(*f);
    if (auto* u = std::get_if<std::unique_ptr<registry::upstream_response>>(&got))
      up = std::move(*u);
  }
  if (up && up->success()) {
    co_await up->discard();
    if (parts_.metrics != nullptr) parts_.metrics->access_check("allowed");
    co_return std::nullopt;
  }
  const bool refused = up && (up->status() == 401 || up->status() == 403 || up->status() == 404);
  if (parts_.metrics != nullptr) parts_.metrics->access_check(refused ? "refused" : "failed");
  if (!up) co_return failure_answer(client, *failed);
  if (up->status() == 401) {
    answer a = unauthorized(*up, repository);
    co_await up->discard();
    co_return a;
  }
  if (up->status() == 403) {
    co_await up->discard();
    co_return error_answer(403, "DENIED",
                           "the upstream refuses these credentials for repository " + repository);
  }
  co_return co_await forwarded_error(req, *up);
}

asio::awaitable<answer> access_gate::unauthenticated(const request& req, const route& r,
                                                     const std::string& repository,
                                                     answer refusal) {
  if (refusal.status == 401 && refusal.fields.count(http::field::www_authenticate) > 0) {
    co_return refusal;
  }
  // The anonymous client answered the challenge itself (or could get no anonymous token): the
  // upstream's challenge, as a client without credentials sees it.
  auto again = co_await check(*bare_, req, r, repository, nullptr);
  if (again && again->status == 401) co_return std::move(*again);
  co_return refusal;
}

asio::awaitable<answer> access_gate::challenge() {
  registry::upstream_request probe;
  probe.method = http::verb::get;
  probe.target = "/v2/";
  auto got = co_await bare_->send(std::move(probe));
  if (auto* f = std::get_if<registry::upstream_failure>(&got)) {
    co_return failure_answer(*bare_, *f);
  }
  auto& up = *std::get<std::unique_ptr<registry::upstream_response>>(got);
  if (up.status() == 401) {
    answer a = unauthorized(up, "(any)");
    co_await up.discard();
    co_return a;
  }
  co_await up.discard();
  answer a;
  a.fields.set(http::field::content_type, "application/json");
  a.body = "{}";
  co_return a;
}

void access_gate::learn(const std::string& repository, const oci::digest& d) {
  const auto now = steady::now();
  shared_.book.learn(repository, d, now + cfg_.access_ttl, now);
}

}  // namespace layercache::server
