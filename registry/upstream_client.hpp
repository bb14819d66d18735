// The client side of the proxy: pooled HTTP/1.1 connections to upstream registries, TLS with
// peer and host name verification, token and Basic auth, and redirect following.
//
// Threading: one connection_pool and one upstream_client per (worker thread, upstream); they
// are used only from that worker's io_context thread. token_cache and the TLS contexts are
// shared by all workers (thread-safe). Bodies are streamed: read_some() hands over what
// arrived, so a blob never sits in memory whole.
//
// Include only from server/*.cpp: this header brings in Beast.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "asio/names.hpp"
#include "config/config.hpp"
#include "net/address_policy.hpp"
#include "registry/auth.hpp"
#include "registry/credentials.hpp"

namespace layercache::metrics {
class upstream_metrics;
}  // namespace layercache::metrics

namespace layercache::registry {

// scheme://host:port of a request.
struct origin {
  std::string scheme;  // "http" | "https"
  std::string host;    // no brackets
  std::uint16_t port = 0;
  [[nodiscard]] bool tls() const { return scheme == "https"; }
  [[nodiscard]] std::string key() const;          // "https://host:port"
  [[nodiscard]] std::string host_header() const;  // "host" or "host:port" ([v6]:port)
};

class connection_pool;
class mirror_clients;

// One open connection to an origin.
class upstream_connection {
 public:
  upstream_connection(const origin& where, asio::any_io_executor ex, asio::ssl::context* tls);
  [[nodiscard]] const origin& where() const { return where_; }
  // The address this connection was made to.
  [[nodiscard]] const asio::ip::tcp::endpoint& peer() const { return peer_; }
  beast::tcp_stream& lowest();
  // Runs `op(stream)` on the plain or TLS stream; `op` returns an awaitable.
  template <typename Op>
  auto with_stream(Op&& op) {
    return tls_ ? op(*tls_) : op(*plain_);
  }
  beast::flat_buffer& buffer() { return buffer_; }

  unsigned requests = 0;  // requests sent on this connection so far
  std::chrono::steady_clock::time_point idle_since;

 private:
  friend class connection_pool;
  origin where_;
  asio::ip::tcp::endpoint peer_;
  std::unique_ptr<beast::tcp_stream> plain_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
};

// Idle connections per origin, for one worker thread.
class connection_pool {
 public:
  explicit connection_pool(asio::any_io_executor ex) : executor_(std::move(ex)) {}

  // An idle connection to `where` (unless `fresh`), or a new one: resolve, connect and TLS
  // handshake within `connect_timeout`. With `policy` (a redirect target), every address
  // `where` resolves to must be allowed by it (and an idle connection's), else
  // redirect_refused and nothing is dialled.
  asio::awaitable<std::variant<std::unique_ptr<upstream_connection>, upstream_failure>> acquire(
      const origin& where, asio::ssl::context* tls, config::duration connect_timeout, bool fresh,
      const net::redirect_policy* policy = nullptr);
  // Keeps `c` for reuse, at most `max_idle` per origin.
  void release(std::unique_ptr<upstream_connection> c, std::size_t max_idle);
  [[nodiscard]] std::size_t idle_count() const;
  [[nodiscard]] std::size_t idle_count(const origin& where) const;
  [[nodiscard]] const asio::any_io_executor& executor() const { return executor_; }

 private:
  asio::any_io_executor executor_;
  std::map<std::string, std::vector<std::unique_ptr<upstream_connection>>> idle_;
};

// A response whose header has arrived; the body is read on demand. Destroying it returns the
// connection to the pool when the body was read to the end and the upstream allows reuse.
class upstream_response {
 public:
  upstream_response(std::unique_ptr<upstream_connection> c, connection_pool& pool,
                    std::size_t max_idle, config::duration read_timeout,
                    config::duration body_timeout, bool head);
  ~upstream_response();
  upstream_response(const upstream_response&) = delete;
  upstream_response& operator=(const upstream_response&) = delete;

  [[nodiscard]] unsigned status() const { return parser_.get().result_int(); }
  // A 2xx answer.
  [[nodiscard]] bool success() const { return status() >= 200 && status() < 300; }
  [[nodiscard]] const http::fields& fields() const { return parser_.get().base(); }
  [[nodiscard]] std::optional<std::uint64_t> content_length() const;
  [[nodiscard]] bool done() const { return parser_.is_done(); }
  // The address the response came from.
  [[nodiscard]] asio::ip::address peer_address() const { return conn_->peer().address(); }

  // Reads body bytes into [data, data+size); returns 0 only at the end of the body.
  asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read_some(char* data,
                                                                               std::size_t size);
  // Reads the rest of the body; fails with body_limit when it exceeds `limit`, and with timeout
  // when it takes longer than the upstream's `timeouts.body` in all (a body that trickles).
  asio::awaitable<std::pair<boost::system::error_code, std::string>> read_all(std::size_t limit);
  // Makes the connection reusable if the rest of the body is small, else gives it up.
  asio::awaitable<void> discard();

  std::string where;  // scheme://host/path of the request, for logs (no query string)

 private:
  friend class upstream_client;
  asio::awaitable<boost::system::error_code> read_header();

  std::unique_ptr<upstream_connection> conn_;
  connection_pool& pool_;
  std::size_t max_idle_;
  config::duration read_timeout_;
  config::duration body_timeout_;
  // While read_all runs: when the whole body must have arrived.
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  http::response_parser<http::buffer_body> parser_;
  bool failed_ = false;
  metrics::upstream_metrics* metrics_ = nullptr;  // body bytes counted on destruction
  std::uint64_t received_ = 0;
};

struct upstream_request {
  http::verb method = http::verb::get;
  std::string target;      // "/v2/<repository>/...[?query]" at the upstream
  std::string repository;  // for the token scope
  std::vector<std::pair<http::field, std::string>> headers;  // Accept, Range, If-Range, ...
  std::string body;   // sent when not empty (a token request's form), with Content-Length
  bool push = false;  // token scope "repository:<name>:pull,push" (publishing profiles)
  // A blob GET: a 3xx is followed (https only, unless the upstream is http; never to an
  // internal address of another kind than the upstream's, nor to layercache itself). Any
  // other request answered 3xx fails with redirect_refused.
  bool follow_redirects = false;
};

using upstream_result = std::variant<std::unique_ptr<upstream_response>, upstream_failure>;

// Where one upstream redirected blob GETs, by request target, each until its deadline; at most
// `capacity` places (expired ones are dropped first, then all). Thread-safe: shared by the
// workers' clients of that upstream.
class redirect_memory {
 public:
  using clock = std::chrono::steady_clock;
  struct place {
    origin where;
    std::string target;  // origin-form, with the query (a signed URL's signature)
    std::optional<net::address_class> upstream_class;  // of the upstream that sent it there
  };
  // 1024 signed URLs of up to a few KiB each: a few MiB at most.
  explicit redirect_memory(std::size_t capacity = 1024) : capacity_(capacity) {}

  [[nodiscard]] std::optional<place> find(const std::string& request_target,
                                          clock::time_point now = clock::now());
  void remember(const std::string& request_target, place p, clock::time_point until,
                clock::time_point now = clock::now());
  void forget(const std::string& request_target);
  [[nodiscard]] std::size_t size();

 private:
  struct entry {
    place p;
    clock::time_point until;
  };
  std::size_t capacity_;
  std::mutex mutex_;
  std::map<std::string, entry, std::less<>> entries_;
};

// Sends requests to one configured upstream: answers its auth challenges and follows its
// redirects. Credentials go only to the upstream's own origin and to allowed token realms;
// never to redirect targets.
//
// Redirects of blob GETs: where the upstream sent a blob GET that then succeeded is remembered
// for `redirect_reuse`, and that blob's next GETs (the other ranges of a cold pull, prefetch)
// go there directly, one round trip and one registry request fewer each. Such a reuse that is
// refused (an expired signature: 4xx) or fails (5xx, no answer) asks the upstream again.
//
// Auth: a Bearer challenge with a realm → a token from the realm (presenting the configured
// credentials: Basic user/password, an identity token as an OAuth2 refresh-token grant, a GCE
// access token as Basic oauth2accesstoken), cached in `tokens` per (upstream, scope) and
// fetched once for all workers (`creds.token_flights()`); a Basic challenge, or a Bearer one
// without a realm → the credentials directly (a GCE access token as Bearer). A challenge is
// remembered per repository scope (never used for another), so that scope's later requests
// carry a token from the start; one whose realm is not allowed (realm_allowed) fails that
// request and is not remembered.
//
// A client acting for one of layercache's own clients (upstream.access: client) presents that
// client's Authorization as it is (present()): no token is fetched, no challenge answered, and
// a 401 is the caller's to pass on. Such clients are shared (std::make_shared): work they
// start that outlives the request (a fill, a blob's completion) holds them through
// weak_from_this().
class upstream_client : public std::enable_shared_from_this<upstream_client> {
 public:
  upstream_client(const config::upstream& cfg, connection_pool& pool, asio::ssl::context* tls,
                  token_cache& tokens, upstream_credentials& creds, redirect_memory& redirects);

  // Sends `req`, following challenges and redirects. A GET or HEAD whose answer never began
  // (connect failure, reset, timeout) or was 429/500/502/503/504 is tried again, up to
  // `retry.attempts` tries in all, after an exponential backoff with jitter or the wait a
  // Retry-After asks for (up to `retry.max_retry_after`; a longer one is returned as it is).
  // The last try's answer or failure is returned.
  asio::awaitable<upstream_result> send(upstream_request req);

  [[nodiscard]] const config::upstream& settings() const { return cfg_; }

  // Opens connections to the upstream ahead of requests that will need them (the blob reads
  // after a tag is resolved there), so that those skip the connect and TLS handshake: up to
  // `warm_connections` idle in this worker's pool (at most max_idle_connections), counting
  // those being opened. Returns at once; a connection that cannot be opened is dropped.
  void warm();

  // Every request at the upstream itself carries `authorization` (empty: none) and nothing
  // else; a 401 is returned as it came. Set before use; never on a client with mirrors.
  void present(std::string authorization) { presented_ = std::move(authorization); }
  [[nodiscard]] bool presents() const { return presented_.has_value(); }

  // layercache's own listeners, which redirects never reach (null: none known). Set before use.
  void set_own_endpoints(const net::own_endpoints* own) { own_ = own; }

  // The upstream's mirrors on this worker (registry/mirrors.hpp), asked before it for blobs
  // and manifests by digest by the calls of registry/distribution.hpp (null: none, or a
  // client that asks no mirror). Set before use.
  void set_mirrors(mirror_clients* m) { mirrors_ = m; }
  [[nodiscard]] mirror_clients* mirrors() const { return mirrors_; }

  // Where requests, body bytes and token fetches are counted (null: nowhere). Set before use.
  void set_metrics(metrics::upstream_metrics* m) { metrics_ = m; }
  [[nodiscard]] metrics::upstream_metrics* metrics() const { return metrics_; }

 private:
  // How the upstream asked to be authenticated for one scope, learnt from its challenge.
  enum class scheme { unknown, bearer, basic, direct_bearer };
  struct challenge {
    scheme kind = scheme::unknown;
    std::string realm;    // bearer: the token realm URL
    std::string service;  // bearer: the challenge's service
    std::string scope;    // bearer: the scope the challenge named
  };
  // Where one try of a request is sent.
  struct hop {
    origin where;
    std::string target;
    bool at_upstream = true;  // false once redirected: no credentials leave for other places
  };

  // One try of send(): challenges and redirects, no retries.
  asio::awaitable<upstream_result> send_once(const upstream_request& req);
  // Where the upstream redirected the last GET of `target`, when remembered: sets `at` and
  // the policy's upstream class, true.
  bool remembered_redirect(const std::string& target, hop& at, net::redirect_policy& policy);
  // After a try at a remembered redirect: true when it failed (no answer, or 400 and up; the
  // answer is dropped, the place forgotten), counting it stale; counts it reused otherwise.
  asio::awaitable<bool> stale_redirect(upstream_result& result, const std::string& target);
  asio::awaitable<upstream_result> exchange(const origin& where, http::verb method,
                                            const std::string& target, const upstream_request& req,
                                            const std::string& authorization,
                                            const net::redirect_policy* policy = nullptr);
  // After a 401 from the upstream: retry with what its challenge asks for (remembered for
  // `scope`), pass the 401 on (neither set), or fail (a realm that is not allowed).
  struct after_401 {
    bool retry = false;
    std::optional<upstream_failure> failure;
  };
  asio::awaitable<after_401> on_unauthorized(upstream_response& response, const std::string& scope,
                                             const std::string& authorization, bool retried);
  // A 401's challenge for `scope`, remembered for that scope when it can be answered; nullopt
  // when it cannot (the client sees the 401), a failure when its realm is not allowed.
  std::variant<std::monostate, challenge, upstream_failure> read_challenge(
      const upstream_response& response, const std::string& scope) const;
  // Counts a refused redirect; a failure at a redirect target loses its details (logged) so
  // that the client learns nothing of the target.
  void quieten(upstream_failure& f, const hop& at) const;
  // The next hop of a redirect answered at `from`, or why it is refused.
  std::variant<hop, upstream_failure> redirect_hop(const hop& from, const upstream_response& r,
                                                   const upstream_request& req) const;
  // The Authorization value for a request at the upstream itself; empty for none.
  asio::awaitable<std::variant<std::string, upstream_failure>> authorization_for(
      const std::string& scope);
  // A token for `scope` from the cache, or fetched once for all workers.
  asio::awaitable<fetch_result> obtain_token(const std::string& scope, const challenge& c);
  asio::awaitable<fetch_result> fetch_token(const std::string& scope, challenge c);
  asio::ssl::context* tls_for(const origin& where) const;
  void remember(const std::string& scope, challenge c);
  [[nodiscard]] const challenge* challenge_for(const std::string& scope) const;

  const config::upstream& cfg_;
  connection_pool& pool_;
  asio::ssl::context* tls_;
  token_cache& tokens_;
  upstream_credentials& creds_;
  origin origin_;
  // Challenges by scope, at most max_challenges (this worker's; cleared when full).
  std::map<std::string, challenge, std::less<>> challenges_;
  metrics::upstream_metrics* metrics_ = nullptr;
  mirror_clients* mirrors_ = nullptr;
  redirect_memory& redirects_;
  const net::own_endpoints* own_ = nullptr;
  // Connections warm() is opening (shared with them: they may end after this client).
  std::shared_ptr<std::size_t> warming_ = std::make_shared<std::size_t>(0);
  std::optional<std::string> presented_;  // present(): a client's own Authorization
};

// Splits an absolute http(s) URL into its origin and origin-form target ("/path?query");
// nullopt for other schemes, user info, or no host.
[[nodiscard]] std::optional<std::pair<origin, std::string>> parse_http_url(std::string_view url);

struct small_response {
  unsigned status = 0;
  std::string body;
};

// One request on a new connection (not pooled): connect, send, read a body of at most `limit`
// bytes, within `timeouts`. For endpoints outside the registry protocol (the GCE metadata
// server). `tls` is used for https origins.
asio::awaitable<std::variant<small_response, upstream_failure>> fetch_small(
    const origin& where, std::string target,
    std::vector<std::pair<std::string, std::string>> headers,
    const config::upstream_timeouts& timeouts, asio::ssl::context* tls, std::size_t limit);

// The wait before try `attempt + 1` (attempt >= 1) under `policy`: backoff * 2^(attempt-1),
// capped at max_backoff, times `jitter` (a factor in [0.5, 1]).
[[nodiscard]] config::duration retry_backoff(const config::upstream_retry& policy, unsigned attempt,
                                             double jitter);

// A client TLS context: system CAs plus `ca_file`, peer verification on.
// Throws std::runtime_error when the CA file cannot be loaded.
[[nodiscard]] std::unique_ptr<asio::ssl::context> make_client_tls(const std::string& ca_file);

}  // namespace layercache::registry
