#include "registry/upstream_client.hpp"

#include <openssl/ssl.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <boost/url/url.hpp>
#include <random>
#include <stdexcept>

#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "oci/retry_after.hpp"
#include "oci/www_authenticate.hpp"

namespace layercache::registry {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t max_discard = std::size_t{64} * 1024;
constexpr std::size_t max_token_body = std::size_t{1024} * 1024;
constexpr auto max_idle_age = std::chrono::seconds(30);
constexpr std::string_view user_agent = "layercache/0.1";

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

bool is_redirect(unsigned status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

upstream_failure failure(upstream_errc code, std::string message) {
  return upstream_failure{code, std::move(message)};
}

upstream_failure io_failure(const boost::system::error_code& ec, std::string_view what,
                            const origin& where) {
  const auto code = ec == beast::error::timeout ? upstream_errc::timeout : upstream_errc::protocol;
  return failure(code, std::string(what) + " " + where.key() + ": " + ec.message());
}

// Builds the origin and origin-form target of an absolute URL; nullopt unless http(s).
std::optional<std::pair<origin, std::string>> split_url(const boost::urls::url_view& u) {
  if (u.scheme() != "http" && u.scheme() != "https") return std::nullopt;
  if (u.host().empty() || u.has_userinfo()) return std::nullopt;
  origin o;
  o.scheme = u.scheme();
  o.host = u.host_type() == boost::urls::host_type::ipv6 ? std::string(u.encoded_host_address())
                                                         : std::string(u.host());
  if (u.has_port()) {
    if (u.port_number() == 0) return std::nullopt;
    o.port = u.port_number();
  } else {
    o.port = o.tls() ? 443 : 80;
  }
  std::string target = u.encoded_path().empty() ? "/" : std::string(u.encoded_path());
  if (u.has_query()) {
    target += '?';
    target += u.encoded_query();
  }
  return std::pair{std::move(o), std::move(target)};
}

std::string all_values(const http::fields& f, http::field name) {
  std::string out;
  for (auto [it, end] = f.equal_range(name); it != end; ++it) {
    if (!out.empty()) out += ", ";
    out += it->value();
  }
  return out;
}

}  // namespace

std::string origin::key() const { return scheme + "://" + host_header(); }

std::string origin::host_header() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string h = v6 ? "[" + host + "]" : host;
  const bool default_port = (tls() && port == 443) || (!tls() && port == 80);
  if (!default_port) h += ":" + std::to_string(port);
  return h;
}

upstream_connection::upstream_connection(const origin& where, asio::any_io_executor ex,
                                         asio::ssl::context* tls)
    : where_(where) {
  // Beast sizes each read by the buffer's free capacity: without room reserved, bodies
  // arrive 512 bytes per read(2).
  buffer_.reserve(std::size_t{64} * 1024);
  if (where.tls()) {
    tls_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ex, *tls);
  } else {
    plain_ = std::make_unique<beast::tcp_stream>(ex);
  }
}

beast::tcp_stream& upstream_connection::lowest() {
  return tls_ ? beast::get_lowest_layer(*tls_) : *plain_;
}

asio::awaitable<std::variant<std::unique_ptr<upstream_connection>, upstream_failure>>
connection_pool::acquire(const origin& where, asio::ssl::context* tls,
                         config::duration connect_timeout, bool fresh,
                         const net::redirect_policy* policy) {
  const auto now = std::chrono::steady_clock::now();
  if (!fresh) {
    if (auto it = idle_.find(where.key()); it != idle_.end()) {
      auto& list = it->second;
      while (!list.empty()) {
        auto c = std::move(list.back());
        list.pop_back();
        if (policy != nullptr && !net::redirect_allowed(*policy, c->peer())) continue;
        if (now - c->idle_since < max_idle_age) co_return std::move(c);
      }
    }
  }

  auto c = std::make_unique<upstream_connection>(where, executor_, tls);
  std::vector<asio::ip::tcp::endpoint> endpoints;
  if (is_ip_literal(where.host)) {
    endpoints.emplace_back(asio::ip::make_address(where.host), where.port);
  } else {
    asio::ip::tcp::resolver resolver(executor_);
    auto [ec, results] =
        co_await resolver.async_resolve(where.host, std::to_string(where.port), use_nothrow);
    if (ec)
      co_return failure(upstream_errc::connect_failed,
                        "resolve " + where.host + ": " + ec.message());
    for (const auto& r : results) endpoints.push_back(r.endpoint());
  }
  // The addresses, not the name: a name may point anywhere (and change between two lookups).
  if (policy != nullptr) {
    for (const auto& ep : endpoints) {
      if (net::redirect_allowed(*policy, ep)) continue;
      log::warn("upstream", "redirect to ", where.key(), " refused: it resolves to ",
                ep.address().to_string(), " (", to_string(net::classify(ep.address())),
                policy->own != nullptr && policy->own->contains(ep) ? ", layercache itself" : "",
                ")");
      co_return failure(upstream_errc::redirect_refused, "redirect refused");
    }
  }
  auto& tcp = c->lowest();
  tcp.expires_after(connect_timeout);
  auto [ec, ep] = co_await tcp.async_connect(endpoints, use_nothrow);
  if (ec) {
    co_return failure(
        ec == beast::error::timeout ? upstream_errc::timeout : upstream_errc::connect_failed,
        "connect " + where.key() + ": " + ec.message());
  }
  c->peer_ = ep;
  tcp.socket().set_option(asio::ip::tcp::no_delay(true), ec);
  if (c->tls_) {
    auto& s = *c->tls_;
    if (!is_ip_literal(where.host) &&
        !SSL_set_tlsext_host_name(s.native_handle(), where.host.c_str())) {
      co_return failure(upstream_errc::connect_failed, "TLS SNI for " + where.host);
    }
    s.set_verify_mode(asio::ssl::verify_peer);
    s.set_verify_callback(asio::ssl::host_name_verification(where.host));
    auto [hec] = co_await s.async_handshake(asio::ssl::stream_base::client, use_nothrow);
    if (hec) {
      co_return failure(
          hec == beast::error::timeout ? upstream_errc::timeout : upstream_errc::connect_failed,
          "TLS handshake with " + where.key() + ": " + hec.message());
    }
  }
  tcp.expires_never();
  co_return std::move(c);
}

void connection_pool::release(std::unique_ptr<upstream_connection> c, std::size_t max_idle) {
  auto& list = idle_[c->where().key()];
  if (list.size() >= max_idle) return;  // closes c
  c->lowest().expires_never();
  c->idle_since = std::chrono::steady_clock::now();
  list.push_back(std::move(c));
}

std::size_t connection_pool::idle_count(const origin& where) const {
  const auto it = idle_.find(where.key());
  return it == idle_.end() ? 0 : it->second.size();
}

std::size_t connection_pool::idle_count() const {
  std::size_t n = 0;
  for (const auto& [k, v] : idle_) n += v.size();
  return n;
}

upstream_response::upstream_response(std::unique_ptr<upstream_connection> c, connection_pool& pool,
                                     std::size_t max_idle, config::duration read_timeout,
                                     config::duration body_timeout, bool head)
    : conn_(std::move(c)),
      pool_(pool),
      max_idle_(max_idle),
      read_timeout_(read_timeout),
      body_timeout_(body_timeout) {
  parser_.header_limit(64 * 1024);  // signed redirect URLs make long Location headers
  parser_.body_limit(boost::none);  // blobs are streamed, never held
  if (head) parser_.skip(true);
}

upstream_response::~upstream_response() {
  if (metrics_ != nullptr && received_ > 0) metrics_->received(received_);
  if (conn_ && !failed_ && parser_.is_done() && parser_.get().keep_alive()) {
    pool_.release(std::move(conn_), max_idle_);
  }
}

std::optional<std::uint64_t> upstream_response::content_length() const {
  auto n = parser_.content_length();
  if (!n) return std::nullopt;
  return *n;
}

asio::awaitable<boost::system::error_code> upstream_response::read_header() {
  auto [ec, n] = co_await conn_->with_stream([this](auto& s) {
    return http::async_read_header(s, conn_->buffer(), parser_, use_nothrow);
  });
  if (ec) failed_ = true;
  co_return ec;
}

asio::awaitable<std::pair<boost::system::error_code, std::size_t>> upstream_response::read_some(
    char* data, std::size_t size) {
  while (!parser_.is_done()) {
    if (failed_) co_return std::pair{boost::system::error_code(beast::error::timeout), 0};
    parser_.get().body().data = data;
    parser_.get().body().size = size;
    const auto pause_ends = std::chrono::steady_clock::now() + read_timeout_;
    conn_->lowest().expires_at(deadline_ ? std::min(*deadline_, pause_ends) : pause_ends);
    auto [ec, n] = co_await conn_->with_stream([this](auto& s) {
      return http::async_read_some(s, conn_->buffer(), parser_, use_nothrow);
    });
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      failed_ = true;
      co_return std::pair{ec, std::size_t{0}};
    }
    const std::size_t got = size - parser_.get().body().size;
    received_ += got;
    if (got > 0) co_return std::pair{boost::system::error_code{}, got};
  }
  co_return std::pair{boost::system::error_code{}, std::size_t{0}};
}

asio::awaitable<std::pair<boost::system::error_code, std::string>> upstream_response::read_all(
    std::size_t limit) {
  std::string out;
  if (auto n = content_length()) {
    if (*n > limit) co_return std::pair{make_error_code(http::error::body_limit), std::string()};
    out.reserve(static_cast<std::size_t>(*n));
  }
  if (!deadline_) deadline_ = std::chrono::steady_clock::now() + body_timeout_;
  char buf[16 * 1024];
  for (;;) {
    auto [ec, n] = co_await read_some(buf, sizeof buf);
    if (ec) co_return std::pair{ec, std::string()};
    if (n == 0) break;
    if (out.size() + n > limit) {
      failed_ = true;
      co_return std::pair{make_error_code(http::error::body_limit), std::string()};
    }
    out.append(buf, n);
  }
  co_return std::pair{boost::system::error_code{}, std::move(out)};
}

asio::awaitable<void> upstream_response::discard() {
  if (parser_.is_done()) co_return;
  const auto n = content_length();
  if (n && *n <= max_discard) {
    (void)co_await read_all(max_discard);  // a failure only costs the connection
  } else {
    failed_ = true;  // chunked or large: cheaper to reconnect than to drain
  }
}

upstream_client::upstream_client(const config::upstream& cfg, connection_pool& pool,
                                 asio::ssl::context* tls, token_cache& tokens,
                                 upstream_credentials& creds, redirect_memory& redirects)
    : cfg_(cfg), pool_(pool), tls_(tls), tokens_(tokens), creds_(creds), redirects_(redirects) {
  origin_.scheme = cfg.scheme;
  origin_.host = cfg.host;
  origin_.port = cfg.port;
}

asio::ssl::context* upstream_client::tls_for(const origin&) const { return tls_; }

asio::awaitable<upstream_result> upstream_client::exchange(const origin& where, http::verb method,
                                                           const std::string& target,
                                                           const upstream_request& req,
                                                           const std::string& authorization,
                                                           const net::redirect_policy* policy) {
  // Counts the exchange when it ends, however it ends (status 0: no response).
  // NOLINTNEXTLINE(cppcoreguidelines-special-member-functions): a scope guard, never copied
  struct timing {
    metrics::upstream_metrics* m = nullptr;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    unsigned status = 0;
    ~timing() {
      if (m != nullptr) m->request(status, std::chrono::steady_clock::now() - start);
    }
  } timed{metrics_};
  // A pooled connection may have been closed by the upstream while idle; that shows only when
  // it is used. Such a failure before any response byte is retried once on a new connection.
  for (int attempt = 0;; ++attempt) {
    auto acquired =
        co_await pool_.acquire(where, tls_for(where), cfg_.timeouts.connect, attempt > 0, policy);
    if (auto* f = std::get_if<upstream_failure>(&acquired)) co_return std::move(*f);
    auto conn = std::move(std::get<std::unique_ptr<upstream_connection>>(acquired));
    const bool reused = conn->requests > 0;
    ++conn->requests;

    http::request<http::string_body> request{method, target, 11};
    request.set(http::field::host, where.host_header());
    request.set(http::field::user_agent, user_agent);
    if (!authorization.empty()) request.set(http::field::authorization, authorization);
    for (const auto& [name, value] : req.headers) request.set(name, value);
    if (!req.body.empty()) {
      request.body() = req.body;
      request.prepare_payload();
    }

    conn->lowest().expires_after(cfg_.timeouts.response);
    auto [wec, wn] = co_await conn->with_stream(
        [&request](auto& s) { return http::async_write(s, request, use_nothrow); });
    if (wec) {
      if (reused && attempt == 0 && wec != beast::error::timeout) continue;
      co_return io_failure(wec, "sending request to", where);
    }
    const bool head = method == http::verb::head;
    auto response =
        std::make_unique<upstream_response>(std::move(conn), pool_, cfg_.max_idle_connections,
                                            cfg_.timeouts.read, cfg_.timeouts.body, head);
    response->where = where.key() + target.substr(0, target.find('?'));
    auto rec = co_await response->read_header();
    if (rec) {
      const bool nothing_received = rec == http::error::end_of_stream ||
                                    rec == asio::error::connection_reset || rec == asio::error::eof;
      if (reused && attempt == 0 && nothing_received) continue;
      co_return io_failure(rec, "reading response from", where);
    }
    timed.status = response->status();
    response->metrics_ = metrics_;
    co_return std::move(response);
  }
}

std::optional<redirect_memory::place> redirect_memory::find(const std::string& request_target,
                                                            clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(request_target);
  if (it == entries_.end()) return std::nullopt;
  if (now >= it->second.until) {
    entries_.erase(it);
    return std::nullopt;
  }
  return it->second.p;
}

void redirect_memory::remember(const std::string& request_target, place p, clock::time_point until,
                               clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (entries_.size() >= capacity_ && !entries_.contains(request_target)) {
    std::erase_if(entries_, [now](const auto& e) { return e.second.until <= now; });
    if (entries_.size() >= capacity_) entries_.clear();
  }
  entries_.insert_or_assign(request_target, entry{std::move(p), until});
}

void redirect_memory::forget(const std::string& request_target) {
  std::lock_guard lock(mutex_);
  entries_.erase(request_target);
}

std::size_t redirect_memory::size() {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

config::duration retry_backoff(const config::upstream_retry& policy, unsigned attempt,
                               double jitter) {
  auto wait = policy.backoff;
  for (unsigned i = 1; i < attempt && wait < policy.max_backoff; ++i) wait *= 2;
  wait = std::min(wait, policy.max_backoff);
  jitter = std::clamp(jitter, 0.5, 1.0);
  return std::chrono::duration_cast<config::duration>(wait * jitter);
}

void upstream_client::warm() {
  const std::size_t want = std::min<std::size_t>(cfg_.warm_connections, cfg_.max_idle_connections);
  const std::size_t have = pool_.idle_count(origin_) + *warming_;
  // By value: the pool (one per worker) outlives a client a reload replaces; the client may
  // not outlive these.
  for (std::size_t i = have; i < want; ++i) {
    ++*warming_;
    asio::co_spawn(
        pool_.executor(),
        [&pool = pool_, where = origin_, tls = tls_for(origin_), timeout = cfg_.timeouts.connect,
         max_idle = cfg_.max_idle_connections, name = cfg_.name,
         warming = warming_]() -> asio::awaitable<void> {
          auto c = co_await pool.acquire(where, tls, timeout, true);
          --*warming;
          if (auto* conn = std::get_if<std::unique_ptr<upstream_connection>>(&c)) {
            pool.release(std::move(*conn), max_idle);
          } else {
            log::debug("upstream", name,
                       ": warming a connection: ", std::get<upstream_failure>(c).message);
          }
        },
        asio::detached);
  }
}

asio::awaitable<upstream_result> upstream_client::send(upstream_request req) {
  const bool idempotent = req.method == http::verb::get || req.method == http::verb::head;
  const unsigned attempts = idempotent ? std::max(1U, cfg_.retry.attempts) : 1;
  for (unsigned attempt = 1;; ++attempt) {
    auto result = co_await send_once(req);
    if (attempt >= attempts) co_return result;
    std::string_view reason;
    std::optional<std::chrono::seconds> asked;
    if (auto* f = std::get_if<upstream_failure>(&result)) {
      // An answer that never began; credentials and redirects are not worth another try.
      if (f->code != upstream_errc::connect_failed && f->code != upstream_errc::timeout &&
          f->code != upstream_errc::protocol) {
        co_return result;
      }
      reason = f->code == upstream_errc::timeout ? "timeout" : "transport";
      log::debug("upstream", cfg_.name, ": try ", attempt, " of ", req.target.substr(0, 200),
                 " failed: ", f->message);
    } else {
      auto& response = *std::get<std::unique_ptr<upstream_response>>(result);
      const unsigned status = response.status();
      if (status != 429 && status != 500 && status != 502 && status != 503 && status != 504) {
        co_return result;
      }
      reason = status == 429 ? "429" : "5xx";
      if (status == 429 || status == 503) {
        const auto value = response.fields()[http::field::retry_after];
        if (!value.empty()) {
          asked = oci::parse_retry_after(value, std::chrono::system_clock::now());
          // A longer wait than we hold a client for: the client sees it and decides.
          if (asked && *asked > cfg_.retry.max_retry_after) co_return result;
        }
      }
      log::debug("upstream", cfg_.name, ": try ", attempt, " of ", req.target.substr(0, 200),
                 " answered ", status);
      co_await response.discard();
    }
    result = upstream_failure{};  // gives the connection back before the wait
    thread_local std::minstd_rand random{std::random_device{}()};
    const double jitter = 0.5 + 0.5 * std::uniform_real_distribution<double>(0.0, 1.0)(random);
    const config::duration wait = asked ? std::chrono::duration_cast<config::duration>(*asked)
                                        : retry_backoff(cfg_.retry, attempt, jitter);
    if (metrics_ != nullptr) metrics_->retry(reason);
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex);
    timer.expires_after(wait);
    (void)co_await timer.async_wait(use_nothrow);
  }
}

asio::awaitable<upstream_result> upstream_client::send_once(const upstream_request& req) {
  const std::string scope = pull_scope(req.repository) + (req.push ? ",push" : "");
  hop at{origin_, req.target, true};
  net::redirect_policy policy{std::nullopt, cfg_.allow_internal_redirects, own_};
  bool auth_retried = false;
  unsigned redirects = 0;
  // A blob GET may go straight to where the upstream redirected the blob's last GET.
  const bool reusable =
      req.follow_redirects && req.method == http::verb::get && cfg_.redirect_reuse.count() > 0;
  bool reused = reusable && remembered_redirect(req.target, at, policy);

  for (;;) {
    std::string authorization;
    if (at.at_upstream && presented_) {
      authorization = *presented_;
    } else if (at.at_upstream) {
      auto got = co_await authorization_for(scope);
      if (auto* f = std::get_if<upstream_failure>(&got)) co_return std::move(*f);
      authorization = std::move(std::get<std::string>(got));
    }
    auto result = co_await exchange(at.where, req.method, at.target, req, authorization,
                                    at.at_upstream ? nullptr : &policy);
    if (reused) {
      reused = false;
      if (co_await stale_redirect(result, req.target)) {
        at = hop{origin_, req.target, true};
        continue;
      }
    }
    if (auto* f = std::get_if<upstream_failure>(&result)) {
      quieten(*f, at);
      co_return result;
    }
    auto& response = std::get<std::unique_ptr<upstream_response>>(result);
    const unsigned status = response->status();
    if (at.at_upstream) policy.upstream_class = net::classify(response->peer_address());

    if (status == 401 && at.at_upstream && !presented_) {
      auto next = co_await on_unauthorized(*response, scope, authorization, auth_retried);
      if (next.failure) co_return std::move(*next.failure);
      if (!next.retry) co_return result;  // the client sees the upstream's refusal
      response.reset();
      auth_retried = true;
      continue;
    }

    if (is_redirect(status) && !response->fields()[http::field::location].empty()) {
      auto next = redirect_hop(at, *response, req);
      co_await response->discard();
      response.reset();
      if (auto* f = std::get_if<upstream_failure>(&next)) {
        quieten(*f, at);
        co_return std::move(*f);
      }
      if (++redirects > cfg_.max_redirects) {
        co_return failure(upstream_errc::too_many_redirects,
                          "more than " + std::to_string(cfg_.max_redirects) + " redirects");
      }
      if (reusable && metrics_ != nullptr) metrics_->redirect("followed");
      at = std::move(std::get<hop>(next));
      continue;
    }
    if (reusable && redirects > 0 && (status == 200 || status == 206)) {
      redirects_.remember(req.target,
                          redirect_memory::place{at.where, at.target, policy.upstream_class},
                          std::chrono::steady_clock::now() + cfg_.redirect_reuse);
    }
    co_return result;
  }
}

bool upstream_client::remembered_redirect(const std::string& target, hop& at,
                                          net::redirect_policy& policy) {
  auto place = redirects_.find(target);
  if (!place) return false;
  at = hop{std::move(place->where), std::move(place->target), false};
  policy.upstream_class = place->upstream_class;
  return true;
}

asio::awaitable<bool> upstream_client::stale_redirect(upstream_result& result,
                                                      const std::string& target) {
  auto* r = std::get_if<std::unique_ptr<upstream_response>>(&result);
  if (r == nullptr || (*r)->status() >= 400) {
    // Expired, gone or now refused: the upstream says where the blob is now.
    if (r != nullptr) co_await (*r)->discard();
    result = upstream_failure{};  // gives the connection back
    redirects_.forget(target);
    if (metrics_ != nullptr) metrics_->redirect("stale");
    co_return true;
  }
  if (metrics_ != nullptr) metrics_->redirect("reused");
  co_return false;
}

void upstream_client::quieten(upstream_failure& f, const hop& at) const {
  if (f.code == upstream_errc::redirect_refused) {
    if (metrics_ != nullptr) metrics_->redirect("refused");
  } else if (!at.at_upstream) {
    // Whether a redirect target answered, refused or timed out is not the client's to learn.
    log::warn("upstream", cfg_.name, ": redirect target: ", f.message);
    f.message = "the upstream's redirect target failed";
  }
}

asio::awaitable<upstream_client::after_401> upstream_client::on_unauthorized(
    upstream_response& response, const std::string& scope, const std::string& authorization,
    bool retried) {
  const auto* known = challenge_for(scope);
  const bool sent_token =
      known != nullptr && known->kind == scheme::bearer && authorization.starts_with("Bearer ");
  // What we sent was refused: never send it again.
  if (sent_token) tokens_.erase(cfg_.name, scope, std::string_view(authorization).substr(7));
  if (retried) co_return after_401{};  // refused with fresh credentials: the client sees it
  auto next = read_challenge(response, scope);
  if (std::holds_alternative<std::monostate>(next)) co_return after_401{};
  if (auto* f = std::get_if<upstream_failure>(&next)) {
    challenges_.erase(scope);
    co_await response.discard();
    co_return after_401{false, std::move(*f)};
  }
  auto* source = creds_.source();
  if (!sent_token && !authorization.empty() && source != nullptr && known != nullptr &&
      (known->kind == scheme::basic || known->kind == scheme::direct_bearer)) {
    // Credentials sent directly were refused: the source fetches new ones.
    auto current = co_await source->get();
    if (auto* c = std::get_if<credentials>(&current)) source->refused(*c);
  }
  co_await response.discard();
  remember(scope, std::move(std::get<challenge>(next)));
  co_return after_401{true, std::nullopt};
}

std::variant<upstream_client::hop, upstream_failure> upstream_client::redirect_hop(
    const hop& from, const upstream_response& r, const upstream_request& req) const {
  const auto refused = [&](std::string_view why) -> upstream_failure {
    log::warn("upstream", cfg_.name, ": redirect of ", http::to_string(req.method), " ",
              req.target.substr(0, req.target.find('?')).substr(0, 200), " refused: ", why);
    return failure(upstream_errc::redirect_refused, "redirect refused");
  };
  if (!req.follow_redirects) {
    // Expected where blobs live in storage (docker-registry redirects HEADs of blobs too): the
    // caller falls back to a GET, whose redirect is followed. Not worth a warning each time.
    log::debug("upstream", cfg_.name, ": redirect of ", http::to_string(req.method), " ",
               req.target.substr(0, req.target.find('?')).substr(0, 200), " not followed");
    return failure(upstream_errc::redirect_refused, "redirect refused");
  }
  // Relative locations (Artifact Registry sends them) resolve against the request URL.
  boost::urls::url base;
  base.set_scheme(from.where.scheme);
  base.set_encoded_host(from.where.host.find(':') != std::string::npos ? "[" + from.where.host + "]"
                                                                       : from.where.host);
  base.set_port_number(from.where.port);
  auto base_target = boost::urls::parse_origin_form(from.target);
  if (!base_target) return failure(upstream_errc::bad_redirect, "bad request target");
  base.set_encoded_path(base_target->encoded_path());
  auto ref = boost::urls::parse_uri_reference(r.fields()[http::field::location]);
  if (!ref) return failure(upstream_errc::bad_redirect, "unparsable Location");
  boost::urls::url resolved;
  if (auto rr = boost::urls::resolve(base, *ref, resolved); !rr) {
    return failure(upstream_errc::bad_redirect, "unresolvable Location");
  }
  auto next = split_url(resolved);
  if (!next) return refused("Location is not http(s)");
  // Blobs of an https upstream never travel in clear (nor through a proxy that can read them).
  if (!next->first.tls() && origin_.tls()) return refused("https to http");
  log::debug("upstream", cfg_.name, ": redirect to ", next->first.key());
  return hop{std::move(next->first), std::move(next->second), false};
}

std::variant<std::monostate, upstream_client::challenge, upstream_failure>
upstream_client::read_challenge(const upstream_response& response, const std::string& scope) const {
  const auto challenges =
      oci::parse_www_authenticate(all_values(response.fields(), http::field::www_authenticate));
  const auto bearer = oci::find_challenge(challenges, "bearer");
  const auto basic = oci::find_challenge(challenges, "basic");
  const bool have_source = creds_.source() != nullptr;
  challenge c;
  if (bearer && bearer->param("realm") && !bearer->param("realm")->empty()) {
    c.kind = scheme::bearer;
    c.realm = std::string(*bearer->param("realm"));
    c.service = std::string(bearer->param("service").value_or(std::string_view{}));
    c.scope = std::string(bearer->param("scope").value_or(std::string_view{}));
    // Never let an upstream's challenge send us (and our credentials) to a place of its choice.
    const auto where = parse_http_url(c.realm);
    if (!where) return failure(upstream_errc::auth_failed, "unusable token realm");
    if (!realm_allowed(cfg_,
                       realm_location{where->first.scheme, where->first.host, where->first.port})) {
      log::warn("upstream", cfg_.name, ": token realm ", where->first.key(), " refused (scope ",
                scope, ")");
      return failure(
          upstream_errc::realm_forbidden,
          "token realm " + where->first.key() + " is not allowed for upstream " + cfg_.name);
    }
  } else if (bearer && have_source) {
    c.kind = scheme::direct_bearer;
  } else if (basic && have_source) {
    c.kind = scheme::basic;
  } else {
    return std::monostate{};
  }
  return c;
}

void upstream_client::remember(const std::string& scope, challenge c) {
  constexpr std::size_t max_challenges = 1024;
  if (challenges_.size() >= max_challenges && !challenges_.contains(scope)) challenges_.clear();
  challenges_.insert_or_assign(scope, std::move(c));
}

const upstream_client::challenge* upstream_client::challenge_for(const std::string& scope) const {
  auto it = challenges_.find(scope);
  return it == challenges_.end() ? nullptr : &it->second;
}

asio::awaitable<std::variant<std::string, upstream_failure>> upstream_client::authorization_for(
    const std::string& scope) {
  const challenge* known = challenge_for(scope);
  if (known == nullptr) co_return std::string();
  const scheme kind = known->kind;
  if (kind == scheme::bearer) {
    if (auto t = tokens_.find(cfg_.name, scope)) co_return "Bearer " + *t;
    const challenge copy = *known;  // the map may change while this waits
    auto got = co_await obtain_token(scope, copy);
    if (auto* f = std::get_if<upstream_failure>(&got)) {
      // Nothing sticks: the scope's next request starts afresh, with a new challenge.
      challenges_.erase(scope);
      co_return std::move(*f);
    }
    co_return "Bearer " + std::get<std::string>(got);
  }
  auto* source = creds_.source();
  if (source == nullptr || kind == scheme::unknown) co_return std::string();
  auto got = co_await source->get();
  if (auto* f = std::get_if<upstream_failure>(&got)) co_return std::move(*f);
  const auto& c = std::get<credentials>(got);
  // A GCE access token is a bearer token: sent as such on Basic challenges too.
  if (!c.access_token.empty()) co_return "Bearer " + c.access_token;
  if (kind == scheme::basic && c.has_basic()) {
    co_return basic_authorization(c.username, c.password);
  }
  co_return std::string();
}

asio::awaitable<fetch_result> upstream_client::obtain_token(const std::string& scope,
                                                            const challenge& c) {
  // Waiters give up on a fetch that outlives every deadline it could meet: a credential fetch
  // and a token request, each connect + response + read.
  const auto& t = cfg_.timeouts;
  const config::duration limit = 2 * (t.connect + t.response + t.read) + std::chrono::seconds(5);
  std::string key = cfg_.name;
  key += '\n';
  key += scope;
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (auto cached = tokens_.find(cfg_.name, scope)) co_return *cached;
    std::string flight_key = key;
    auto joined = co_await creds_.token_flights().join(std::move(flight_key), limit);
    if (auto* claimed = std::get_if<flight_table::lead>(&joined)) {
      flight_table::lead lead = std::move(*claimed);
      // Another fetch may have finished between the cache miss and the claim.
      if (auto cached = tokens_.find(cfg_.name, scope)) {
        lead.finish(*cached);
        co_return *cached;
      }
      auto fetched = co_await fetch_token(scope, c);
      if (metrics_ != nullptr)
        metrics_->token_fetch(!std::holds_alternative<upstream_failure>(fetched));
      lead.finish(fetched);
      co_return fetched;
    }
    if (auto& waited = std::get<std::optional<fetch_result>>(joined)) co_return std::move(*waited);
  }
  co_return failure(upstream_errc::auth_failed, "token fetch for " + scope + " did not finish");
}

asio::awaitable<fetch_result> upstream_client::fetch_token(const std::string& scope, challenge ch) {
  const std::string& service = ch.service;
  const std::string& challenge_scope = ch.scope;
  auto parsed = boost::urls::parse_absolute_uri(ch.realm);
  if (!parsed) co_return failure(upstream_errc::auth_failed, "unparsable token realm");
  boost::urls::url url = *parsed;
  auto split = split_url(url);
  if (!split) co_return failure(upstream_errc::auth_failed, "token realm is not http(s)");
  // Checked when the challenge was read; again here, where the credentials leave.
  if (!realm_allowed(cfg_,
                     realm_location{split->first.scheme, split->first.host, split->first.port})) {
    co_return failure(
        upstream_errc::realm_forbidden,
        "token realm " + split->first.key() + " is not allowed for upstream " + cfg_.name);
  }
  // The challenge names the scope for the repository it refused; it is ours unless the
  // upstream renamed the repository.
  std::string asked_scope = scope;
  if (const auto prefix = scope.substr(0, scope.rfind(':') + 1);
      challenge_scope.starts_with(prefix)) {
    asked_scope = challenge_scope;
  }

  credentials c;
  if (auto* source = creds_.source()) {
    auto got = co_await source->get();
    if (auto* f = std::get_if<upstream_failure>(&got)) co_return std::move(*f);
    c = std::move(std::get<credentials>(got));
  }

  upstream_request token_req;
  token_req.headers.emplace_back(http::field::accept, "application/json");
  std::string authorization;
  http::verb method = http::verb::get;
  if (!c.identity_token.empty()) {
    // docker's OAuth2 refresh-token grant: the identity token never goes in a URL.
    auto encode = [](std::string_view v) {
      return boost::urls::encode(v, boost::urls::unreserved_chars);
    };
    method = http::verb::post;
    token_req.headers.emplace_back(http::field::content_type, "application/x-www-form-urlencoded");
    token_req.body = "grant_type=refresh_token&client_id=layercache&service=" + encode(service) +
                     "&scope=" + encode(asked_scope) + "&refresh_token=" + encode(c.identity_token);
  } else {
    if (!service.empty()) url.params().set("service", service);
    url.params().set("scope", asked_scope);
    split = split_url(url);
    if (c.has_basic()) authorization = basic_authorization(c.username, c.password);
  }

  auto result = co_await exchange(split->first, method, split->second, token_req, authorization);
  if (auto* f = std::get_if<upstream_failure>(&result)) {
    // A token endpoint that is down or hangs is a bad gateway, whatever the reason.
    const bool timed_out = f->code == upstream_errc::timeout;
    co_return failure(
        upstream_errc::auth_failed,
        "token endpoint " + split->first.key() + (timed_out ? " timed out: " : ": ") + f->message);
  }
  auto& response = std::get<std::unique_ptr<upstream_response>>(result);
  const unsigned status = response->status();
  if (status != 200) {
    co_await response->discard();
    const std::string text = "token endpoint " + split->first.key() + " answered " +
                             std::to_string(status) + " for " + asked_scope;
    if (status == 401 || status == 403) {
      if (auto* source = creds_.source(); source != nullptr && !c.empty()) source->refused(c);
      co_return failure(upstream_errc::auth_denied, text);
    }
    co_return failure(upstream_errc::auth_failed, text);
  }
  auto [ec, body] = co_await response->read_all(max_token_body);
  if (ec) co_return failure(upstream_errc::auth_failed, "token endpoint: " + ec.message());
  auto token = parse_token_response(body);
  if (!token) co_return failure(upstream_errc::auth_failed, "token endpoint gave no token");
  tokens_.store(cfg_.name, scope, token->token, token->expires_in);
  log::debug("upstream", cfg_.name, ": token for ", scope, " valid ", token->expires_in.count(),
             "s");
  co_return std::move(token->token);
}

std::optional<std::pair<origin, std::string>> parse_http_url(std::string_view url) {
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed) return std::nullopt;
  return split_url(*parsed);
}

asio::awaitable<std::variant<small_response, upstream_failure>> fetch_small(
    const origin& where, std::string target,
    std::vector<std::pair<std::string, std::string>> headers,
    const config::upstream_timeouts& timeouts, asio::ssl::context* tls, std::size_t limit) {
  const auto ex = co_await asio::this_coro::executor;
  connection_pool pool(ex);
  auto acquired = co_await pool.acquire(where, tls, timeouts.connect, true);
  if (auto* f = std::get_if<upstream_failure>(&acquired)) co_return std::move(*f);
  auto conn = std::move(std::get<std::unique_ptr<upstream_connection>>(acquired));

  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, where.host_header());
  request.set(http::field::user_agent, user_agent);
  request.set(http::field::connection, "close");
  for (const auto& [name, value] : headers) request.set(name, value);
  conn->lowest().expires_after(timeouts.response);
  auto [wec, wn] = co_await conn->with_stream(
      [&request](auto& s) { return http::async_write(s, request, use_nothrow); });
  if (wec) co_return io_failure(wec, "sending request to", where);

  http::response_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(limit);
  auto [hec, hn] = co_await conn->with_stream([&conn, &parser](auto& s) {
    return http::async_read_header(s, conn->buffer(), parser, use_nothrow);
  });
  if (hec) co_return io_failure(hec, "reading response from", where);
  conn->lowest().expires_after(timeouts.read);
  auto [bec, bn] = co_await conn->with_stream([&conn, &parser](auto& s) {
    return http::async_read(s, conn->buffer(), parser, use_nothrow);
  });
  if (bec) co_return io_failure(bec, "reading response from", where);
  small_response out;
  out.status = parser.get().result_int();
  out.body = std::move(parser.get().body());
  co_return out;
}

std::unique_ptr<asio::ssl::context> make_client_tls(const std::string& ca_file) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  ctx->set_default_verify_paths(ec);
  if (ec) log::warn("tls", "system CA store unavailable: ", ec.message());
  if (!ca_file.empty()) {
    ctx->load_verify_file(ca_file, ec);
    if (ec) throw std::runtime_error("cannot load CA file " + ca_file + ": " + ec.message());
  }
  ctx->set_verify_mode(asio::ssl::verify_peer);
  return ctx;
}

}  // namespace layercache::registry
