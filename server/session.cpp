#include "server/session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "server/handlers.hpp"
#include "server/tls_stream.hpp"

namespace layercache::server {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::string_view api_version = "registry/2.0";

double millis(clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Reads requests, has handle_request answer them, and writes the answers; keeps the deadlines,
// the metrics and the access log of each exchange.
template <typename Stream>
class session final : public session_base {
 public:
  session(Stream& stream, worker_context& worker) : stream_(stream), worker_(worker) {
    worker_.sessions.insert(this);
  }
  ~session() override { worker_.sessions.erase(this); }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  void close_if_idle() override {
    if (idle_) close_now();
  }
  void close_now() override {
    boost::system::error_code ec;
    lowest().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    lowest().close();
  }

  asio::awaitable<void> run() {
    const auto& timeouts = worker_.shared.cfg.server.timeouts;
    bool first = true;
    bool linger = false;  // the client may still be sending: see close()
    while (!worker_.draining) {
      http::request_parser<http::empty_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(worker_.shared.cfg.server.max_header_size));
      lowest().expires_after(first ? timeouts.request_header : timeouts.idle);
      idle_ = !first;
      first = false;
      auto [ec, n] = co_await http::async_read_header(stream_, buffer_, parser, use_nothrow);
      idle_ = false;
      exchange_ = exchange{};
      if (ec) {
        const request none;
        if (ec == http::error::header_limit) {
          co_await send_error(none, 431, "UNSUPPORTED", "request header too large", false);
          finish_exchange(none);
          linger = true;
        } else if (ec.category() == make_error_code(http::error::end_of_stream).category() &&
                   ec != http::error::end_of_stream && ec != http::error::partial_message) {
          co_await send_error(none, 400, "UNSUPPORTED", "malformed request", false);
          finish_exchange(none);
        }
        break;
      }
      const request& req = parser.get();
      if (req.count(http::field::transfer_encoding) > 0 && !parser.chunked()) {
        // A coding we do not know (RFC 9112 6.1): where its body ends is unknown, so the bytes
        // after the header are never read as a request of their own.
        co_await send_error(req, 400, "UNSUPPORTED", "unsupported Transfer-Encoding", false);
        finish_exchange(req);
        break;
      }
      // A body we will not read leaves the connection unusable for the next request.
      const bool has_body = parser.chunked() || parser.content_length().value_or(0) > 0;
      const bool keep = co_await handle(req, req.keep_alive() && !has_body);
      finish_exchange(req);
      if (!keep || has_body) break;
    }
    co_await close(linger);
  }

 private:
  // beast::tcp_stream, or tls_stream's deadline_socket: deadlines, the socket, closing.
  auto& lowest() { return beast::get_lowest_layer(stream_); }

  // Counts the exchange in the metrics and writes its access-log line.
  void finish_exchange(const request& req) {
    const auto end = clock::now();
    const auto header_at = exchange_.header_at.value_or(end);
    count_exchange(end, header_at);
    if (!worker_.shared.access_log.load(std::memory_order_relaxed)) return;
    log_exchange(req, end, header_at);
  }

  void count_exchange(clock::time_point end, clock::time_point header_at) {
    auto& m = worker_.shared.metrics;
    metrics::request_sample sample;
    sample.kind = exchange_.kind;
    sample.from = exchange_.from;
    sample.status = exchange_.status;
    sample.duration = end - exchange_.start;
    sample.ttfb = header_at - exchange_.start;
    sample.body_bytes = exchange_.bytes;
    m.observe(sample);
    if (exchange_.blob) {
      m.served(metrics::source::hit, exchange_.blob->store_bytes);
      m.served(metrics::source::joined, exchange_.blob->joined_bytes);
      m.served(metrics::source::miss, exchange_.blob->filled_bytes);
      m.served(metrics::source::prefetch, exchange_.blob->prefetch_bytes);
    } else {
      m.served(exchange_.from, exchange_.bytes);
    }
  }

  void log_exchange(const request& req, clock::time_point end, clock::time_point header_at) {
    std::string line = "\"logger\":\"access\",\"method\":";
    line += log::json_string(req.method_string().empty() ? std::string_view("-")
                                                         : std::string_view(req.method_string()));
    line += ",\"target\":";
    line += log::json_string(req.target().empty() ? std::string_view("-")
                                                  : std::string_view(req.target()));
    line += ",\"route\":\"";
    line += metrics::to_string(exchange_.kind);
    line += "\",\"status\":" + std::to_string(exchange_.status);
    line += ",\"bytes\":" + std::to_string(exchange_.bytes);
    char timing[96];
    std::snprintf(timing, sizeof timing, ",\"duration_ms\":%.3f,\"ttfb_ms\":%.3f",
                  millis(end - exchange_.start), millis(header_at - exchange_.start));
    line += timing;
    line += ",\"source\":\"";
    line += metrics::to_string(exchange_.from);
    line += '"';
    if (!exchange_.upstream.empty())
      line += ",\"upstream\":" + log::json_string(exchange_.upstream);
    if (auto range = req[http::field::range]; !range.empty()) {
      line += ",\"range\":" + log::json_string(std::string_view(range.data(), range.size()));
    }
    line += ",\"client\":" + log::json_string(client_);
    log::json_line(line);
  }

  // `linger`: the answer went out before the request was read to its end. Closing a socket
  // with unread bytes makes the kernel send a reset, which can reach the client before it has
  // read the answer (it then sees ECONNRESET, not the 431). So the "lingering close": send FIN,
  // read and drop what still comes until the client closes, for at most 1 s and 1 MiB, then
  // close.
  asio::awaitable<void> close(bool linger = false) {
    boost::system::error_code ec;
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
      lowest().expires_after(std::chrono::seconds(5));
      co_await stream_.async_shutdown(use_nothrow);
    }
    lowest().socket().shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    if (linger) {
      constexpr std::size_t linger_bytes = std::size_t{1024} * 1024;
      lowest().expires_after(std::chrono::seconds(1));
      buffer_.clear();
      const auto sink =
          buffer_.prepare(std::size_t{16} * 1024);  // never committed: what is read is dropped
      for (std::size_t dropped = 0; dropped < linger_bytes;) {
        auto [read_ec, n] = co_await lowest().async_read_some(sink, use_nothrow);
        if (read_ec) break;
        dropped += n;
      }
    }
    lowest().close();
  }

  // Writes a complete response. For HEAD, the header says the length and no body follows.
  // `head_length` is the Content-Length a HEAD answer announces when it differs from the body.
  asio::awaitable<bool> send(const request& req, http::response<http::string_body> res,
                             bool keep_alive, std::optional<std::uint64_t> head_length = {}) {
    res.version(11);
    res.set("Docker-Distribution-API-Version", api_version);
    res.keep_alive(keep_alive && !worker_.draining);
    res.prepare_payload();
    if (req.method() == http::verb::head) {
      res.body().clear();
      if (head_length) res.set(http::field::content_length, std::to_string(*head_length));
    }
    lowest().expires_after(worker_.shared.cfg.server.timeouts.write);
    exchange_.status = res.result_int();
    auto [ec, n] = co_await http::async_write(stream_, res, use_nothrow);
    if (!ec) {
      exchange_.header_at = clock::now();
      exchange_.bytes += res.body().size();
    }
    co_return !ec && res.keep_alive();
  }

  asio::awaitable<bool> send_error(const request& req, unsigned status, std::string_view code,
                                   std::string_view message, bool keep_alive) {
    co_return co_await write(req, error_answer(status, code, message), keep_alive);
  }

  asio::awaitable<bool> handle(const request& req, bool keep_alive) {
    answer a = co_await handle_request(worker_.shared, worker_.clients, worker_.gates, req,
                                       exchange_, stream_.get_executor());
    co_return co_await write(req, std::move(a), keep_alive);
  }

  // Writes `a`: a held body whole, a streamed one piece by piece.
  asio::awaitable<bool> write(const request& req, answer a, bool keep_alive) {
    if (!a.stream) {
      http::response<http::string_body> res{http::response_header<>(std::move(a.fields))};
      res.result(a.status);
      res.body() = std::move(a.body);
      co_return co_await send(req, std::move(res), keep_alive, a.length);
    }
    http::response<http::buffer_body> res{http::response_header<>(std::move(a.fields))};
    res.result(a.status);
    res.version(11);
    res.set("Docker-Distribution-API-Version", api_version);
    res.keep_alive(keep_alive && !worker_.draining);
    if (req.method() == http::verb::head) co_return co_await send_head(req, res, a.length);
    if (a.length) {
      res.content_length(*a.length);
    } else {
      res.chunked(true);
    }
    http::response_serializer<http::buffer_body> sr{res};
    if (a.header_first && !co_await start_body(res, sr)) co_return false;
    const piece_sink out = [&](const char* p, std::size_t n) -> asio::awaitable<bool> {
      co_return co_await write_piece(res, sr, p, n);
    };
    const auto end = co_await a.stream->write(out);
    if (end == body_source::end::cut) co_return false;
    if (end == body_source::end::unavailable) {
      if (sr.is_header_done()) co_return false;
      exchange_.blob.reset();
      co_return co_await send_error(req, 502, "UNAVAILABLE", a.unavailable, keep_alive);
    }
    if (!sr.is_header_done() && !co_await start_body(res, sr)) co_return false;
    const bool finished = co_await finish_body(res, sr);
    co_return finished&& res.keep_alive();
  }

  // Answers a HEAD with `res`'s status and fields, announcing `length` when known.
  asio::awaitable<bool> send_head(const request& /*req*/,
                                  const http::response<http::buffer_body>& res,
                                  std::optional<std::uint64_t> length) {
    http::response<http::empty_body> head{http::response_header<>(res.base())};
    if (length) head.set(http::field::content_length, std::to_string(*length));
    head.keep_alive(res.keep_alive());
    lowest().expires_after(worker_.shared.cfg.server.timeouts.write);
    http::response_serializer<http::empty_body> sr{head};
    exchange_.status = head.result_int();
    auto [ec, n] = co_await http::async_write_header(stream_, sr, use_nothrow);
    if (!ec) exchange_.header_at = clock::now();
    co_return !ec && head.keep_alive();
  }

  // Writes the header of a streamed body; the pieces follow with write_piece.
  asio::awaitable<bool> start_body(http::response<http::buffer_body>& res,
                                   http::response_serializer<http::buffer_body>& sr) {
    res.body().data = nullptr;
    res.body().more = true;
    lowest().expires_after(worker_.shared.cfg.server.timeouts.write);
    exchange_.status = res.result_int();
    auto [ec, n] = co_await http::async_write_header(stream_, sr, use_nothrow);
    if (!ec) exchange_.header_at = clock::now();
    co_return !ec;
  }

  // Writes one piece of a streamed body; the header too, in the same write, when start_body
  // has not sent it (one send per small response instead of two).
  asio::awaitable<bool> write_piece(http::response<http::buffer_body>& res,
                                    http::response_serializer<http::buffer_body>& sr,
                                    const char* data, std::size_t size) {
    res.body().data = const_cast<char*>(data);
    res.body().size = size;
    res.body().more = true;
    const bool with_header = !sr.is_header_done();
    if (with_header) exchange_.status = res.result_int();
    lowest().expires_after(worker_.shared.cfg.server.timeouts.write);
    auto [ec, n] = co_await http::async_write(stream_, sr, use_nothrow);
    const bool ok = !ec || ec == http::error::need_buffer;
    if (ok) exchange_.bytes += size;
    if (ok && with_header) exchange_.header_at = clock::now();
    co_return ok;
  }

  asio::awaitable<bool> finish_body(http::response<http::buffer_body>& res,
                                    http::response_serializer<http::buffer_body>& sr) {
    res.body().data = nullptr;
    res.body().size = 0;
    res.body().more = false;
    lowest().expires_after(worker_.shared.cfg.server.timeouts.write);
    auto [ec, n] = co_await http::async_write(stream_, sr, use_nothrow);
    co_return !ec;
  }

  Stream& stream_;
  worker_context& worker_;
  beast::flat_buffer buffer_;
  bool idle_ = false;
  exchange exchange_;
  std::string client_ = client_address();

  std::string client_address() {
    boost::system::error_code ec;
    const auto ep = lowest().socket().remote_endpoint(ec);
    if (ec) return "-";
    const auto a = ep.address();
    const std::string host = a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
    return host + ":" + std::to_string(ep.port());
  }
};

// Counts the connection while it is open.
struct connection_count {
  explicit connection_count(std::atomic<std::uint64_t>& n) : n_(n) { ++n_; }
  ~connection_count() { --n_; }
  connection_count(const connection_count&) = delete;
  connection_count& operator=(const connection_count&) = delete;
  std::atomic<std::uint64_t>& n_;
};

}  // namespace

asio::awaitable<void> serve_connection(asio::ip::tcp::socket socket, asio::ssl::context* tls,
                                       worker_context& worker) {
  connection_count counted(worker.open_connections);
  boost::system::error_code ec;
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  if (tls == nullptr) {
    beast::tcp_stream stream(std::move(socket));
    session<beast::tcp_stream> s(stream, worker);
    co_await s.run();
    co_return;
  }
  tls_stream stream(std::move(socket), tls->native_handle());
  stream.next_layer().expires_after(worker.shared.cfg.server.timeouts.request_header);
  auto [hec] = co_await stream.async_handshake(use_nothrow);
  if (hec) {
    log::debug("server", "TLS handshake failed: ", hec.message());
    co_return;
  }
  session<tls_stream> s(stream, worker);
  co_await s.run();
}

}  // namespace layercache::server
