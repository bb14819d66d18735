// layercache-bench's HTTP client: keep-alive HTTP/1.1 connections over plain TCP or TLS (Beast,
// Asio SSL, C++20 coroutines), bodies read through a 256 KiB buffer per connection and
// discarded unless a manifest, redirects followed as a registry client follows them. Internal to
// loadtest/. Not thread-safe: a run's connections all live on its one thread.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loadtest/scenario.hpp"
#include "oci/digest.hpp"

namespace layercache::loadtest {

using clock_type = std::chrono::steady_clock;

[[nodiscard]] double ms_between(clock_type::time_point a, clock_type::time_point b);

// Where requests go: one resolved endpoint, the Host header and a path prefix for /v2/; for
// https, the name the certificate must carry (sent as SNI when not an address).
struct origin {
  boost::asio::ip::tcp::endpoint endpoint;
  std::string host_header;
  std::string prefix;  // the URL's path without its trailing '/', e.g. "" or "/mirror"
  bool tls = false;
  std::string host;
};

// Throws std::runtime_error when `url`'s host does not resolve.
[[nodiscard]] origin resolve_origin(boost::asio::io_context& io, const http_url& url);

// The TLS client context of a run: TLS 1.2 or later; the peer's certificate checked against the
// system's CAs and those of `ca_file` (PEM; none when empty), or not checked at all when
// `insecure`. Throws std::runtime_error when `ca_file` cannot be loaded.
[[nodiscard]] std::unique_ptr<boost::asio::ssl::context> make_client_tls(const std::string& ca_file,
                                                                         bool insecure);

struct request_spec {
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string target;
  std::string range;              // a Range header value, or empty
  bool accept_manifests = false;  // send an Accept naming every manifest type
  bool capture = false;           // keep the body (up to 8 MiB) in response::body
  oci::hasher* hash = nullptr;    // fed every body byte when set
};

struct response {
  std::string error;  // set when no complete answer was read (connect, I/O, timeout)
  unsigned status = 0;
  std::optional<std::uint64_t> content_length;
  std::uint64_t body_bytes = 0;
  std::string content_type;
  std::string location;  // of a redirect
  std::string body;
  double ttfb_ms = 0;
  double total_ms = 0;
};

// Times the run: no request starts after `deadline`, and no operation waits past `hard_stop`.
struct clock_limits {
  clock_type::time_point deadline;
  clock_type::time_point hard_stop;
  clock_type::duration timeout;

  [[nodiscard]] clock_type::time_point expiry() const {
    return std::min(clock_type::now() + timeout, hard_stop);
  }
  [[nodiscard]] bool open() const { return clock_type::now() < deadline; }
};

// One keep-alive HTTP/1.1 connection, reopened after a failure. A request on a reused
// connection that fails before any answer (the server closed it while idle) is retried once
// on a fresh one. A GET answered with a redirect (a registry sending blobs to its storage
// host) is followed on a second keep-alive connection to the place it names, as a registry
// client would; the times then count from the first request. An https origin's connections
// (and those of https redirects) use `tls`, with the handshake inside the connect (not in a
// request's times); a failed handshake is a failed connect. Every request carries `headers`
// (none when null) after Host and User-Agent, a redirect's only when it stays on the origin's
// scheme, address and port. `origin`, `limits`, `tls`, `headers` and `connects` (counted up at
// each connection opened) outlive the connection; `tls` may be null when no https place is
// ever reached.
class connection {
 public:
  connection(boost::asio::any_io_executor ex, const origin* o, const clock_limits* limits,
             std::uint64_t* connects, boost::asio::ssl::context* tls = nullptr,
             const std::vector<header_field>* headers = nullptr)
      : ex_(std::move(ex)),
        origin_(o),
        limits_(limits),
        connects_(connects),
        tls_(tls),
        headers_(headers) {}

  // Never throws: failures are in response::error.
  boost::asio::awaitable<response> send(request_spec spec);

  void close();

 private:
  using parser_type = boost::beast::http::response_parser<boost::beast::http::buffer_body>;
  using tls_stream = boost::beast::ssl_stream<boost::beast::tcp_stream>;
  static constexpr int max_redirects = 5;

  boost::asio::awaitable<response> send_here(request_spec spec);
  boost::asio::awaitable<void> exchange(request_spec* spec, response* res, bool* answered);
  // The exchange on the open connection, plain (`Stream` = tcp_stream) or TLS.
  template <typename Stream>
  boost::asio::awaitable<void> exchange_on(Stream* stream, request_spec* spec, response* res,
                                           bool* answered);
  // Opens stream_ or tls_stream_ (TCP, then the handshake); false (and res->error) on a failure.
  boost::asio::awaitable<bool> connect(response* res);
  // Reads the body of the answer whose header `parser` has read, for the request written at
  // `t0`; sets the body fields and times of `res`. The read error, if any.
  template <typename Stream>
  boost::asio::awaitable<boost::system::error_code> read_body(Stream* stream, parser_type* parser,
                                                              const request_spec* spec,
                                                              response* res,
                                                              clock_type::time_point t0);
  [[nodiscard]] bool open() const { return stream_.has_value() || tls_stream_.has_value(); }
  void drop() {
    stream_.reset();
    tls_stream_.reset();
  }

  boost::asio::any_io_executor ex_;
  const origin* origin_;
  const clock_limits* limits_;
  std::uint64_t* connects_;
  boost::asio::ssl::context* tls_;
  const std::vector<header_field>* headers_;
  // The open connection: one of the two, or neither.
  std::optional<boost::beast::tcp_stream> stream_;
  std::optional<tls_stream> tls_stream_;
  boost::beast::flat_buffer buffer_;
  std::vector<char> body_;
  // Where the last redirect went, and a connection there.
  std::unique_ptr<origin> redirected_origin_;
  std::unique_ptr<connection> redirected_;
};

}  // namespace layercache::loadtest
