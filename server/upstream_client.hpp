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
#include <string>
#include <variant>
#include <vector>

#include "config/config.hpp"
#include "server/auth.hpp"

namespace layercache::metrics {
class upstream_metrics;
}  // namespace layercache::metrics

namespace layercache::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// scheme://host:port of a request.
struct origin {
  std::string scheme;  // "http" | "https"
  std::string host;    // no brackets
  std::uint16_t port = 0;
  [[nodiscard]] bool tls() const { return scheme == "https"; }
  [[nodiscard]] std::string key() const;          // "https://host:port"
  [[nodiscard]] std::string host_header() const;  // "host" or "host:port" ([v6]:port)
};

enum class upstream_errc {
  connect_failed,   // DNS, TCP or TLS handshake
  timeout,          // a deadline passed
  protocol,         // malformed response, connection lost mid-response
  auth_failed,      // the token endpoint refused or answered nonsense
  realm_forbidden,  // a challenge named a token realm outside the upstream's hosts
  too_many_redirects,
  bad_redirect,  // unusable Location
};

struct upstream_failure {
  upstream_errc code = upstream_errc::protocol;
  std::string message;  // for logs; never carries credentials or signed query strings
  [[nodiscard]] unsigned http_status() const { return code == upstream_errc::timeout ? 504 : 502; }
};

class connection_pool;

// One open connection to an origin.
class upstream_connection {
 public:
  upstream_connection(const origin& where, asio::any_io_executor ex, asio::ssl::context* tls);
  [[nodiscard]] const origin& where() const { return where_; }
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
  std::unique_ptr<beast::tcp_stream> plain_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
};

// Idle connections per origin, for one worker thread.
class connection_pool {
 public:
  explicit connection_pool(asio::any_io_executor ex) : executor_(std::move(ex)) {}

  // An idle connection to `where` (unless `fresh`), or a new one: resolve, connect and TLS
  // handshake within `connect_timeout`.
  asio::awaitable<std::variant<std::unique_ptr<upstream_connection>, upstream_failure>> acquire(
      const origin& where, asio::ssl::context* tls, config::duration connect_timeout, bool fresh);
  // Keeps `c` for reuse, at most `max_idle` per origin.
  void release(std::unique_ptr<upstream_connection> c, std::size_t max_idle);
  [[nodiscard]] std::size_t idle_count() const;

 private:
  asio::any_io_executor executor_;
  std::map<std::string, std::vector<std::unique_ptr<upstream_connection>>> idle_;
};

// A response whose header has arrived; the body is read on demand. Destroying it returns the
// connection to the pool when the body was read to the end and the upstream allows reuse.
class upstream_response {
 public:
  upstream_response(std::unique_ptr<upstream_connection> c, connection_pool& pool,
                    std::size_t max_idle, config::duration read_timeout, bool head);
  ~upstream_response();
  upstream_response(const upstream_response&) = delete;
  upstream_response& operator=(const upstream_response&) = delete;

  [[nodiscard]] unsigned status() const { return parser_.get().result_int(); }
  [[nodiscard]] const http::fields& fields() const { return parser_.get().base(); }
  [[nodiscard]] std::optional<std::uint64_t> content_length() const;
  [[nodiscard]] bool done() const { return parser_.is_done(); }

  // Reads body bytes into [data, data+size); returns 0 only at the end of the body.
  asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read_some(char* data,
                                                                               std::size_t size);
  // Reads the rest of the body; fails with message_size when it exceeds `limit`.
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
};

using upstream_result = std::variant<std::unique_ptr<upstream_response>, upstream_failure>;

// Sends requests to one configured upstream: answers its auth challenges and follows its
// redirects. Credentials go only to the upstream's own origin and to allowed token realms;
// never to redirect targets.
class upstream_client {
 public:
  upstream_client(const config::upstream& cfg, connection_pool& pool, asio::ssl::context* tls,
                  token_cache& tokens);

  asio::awaitable<upstream_result> send(upstream_request req);

  [[nodiscard]] const config::upstream& settings() const { return cfg_; }

  // Where requests, body bytes and token fetches are counted (null: nowhere). Set before use.
  void set_metrics(metrics::upstream_metrics* m) { metrics_ = m; }

 private:
  asio::awaitable<upstream_result> exchange(const origin& where, http::verb method,
                                            const std::string& target, const upstream_request& req,
                                            const std::string& authorization);
  asio::awaitable<std::optional<upstream_failure>> fetch_token(std::string_view realm,
                                                               std::string_view service,
                                                               std::string_view scope,
                                                               std::string_view cache_scope);
  asio::ssl::context* tls_for(const origin& where) const;

  const config::upstream& cfg_;
  connection_pool& pool_;
  asio::ssl::context* tls_;
  token_cache& tokens_;
  origin origin_;
  enum class scheme { unknown, bearer, basic } scheme_ = scheme::unknown;
  metrics::upstream_metrics* metrics_ = nullptr;
};

// A client TLS context: system CAs plus `ca_file`, peer verification on.
// Throws std::runtime_error when the CA file cannot be loaded.
[[nodiscard]] std::unique_ptr<asio::ssl::context> make_client_tls(const std::string& ca_file);

}  // namespace layercache::server
