#include "tests/support/http_stub.hpp"

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace layercache::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr auto io_timeout = 60s;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

}  // namespace

struct http_stub::impl {
  impl(handler h, std::string a) : respond(std::move(h)), address(std::move(a)) {}

  std::unique_ptr<asio::ssl::context> tls;  // set: HTTPS
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  handler respond;
  std::string address;
  std::uint16_t port = 0;
  mutable std::mutex mutex;
  std::vector<stub_request> recorded;
  std::atomic<unsigned> accepted{0};
  std::thread thread;

  static asio::awaitable<void> accept_loop(impl* self) {
    for (;;) {
      auto [ec, socket] = co_await self->acceptor.async_accept(use_tuple);
      if (ec == asio::error::operation_aborted) co_return;
      if (ec) continue;
      ++self->accepted;
      if (self->tls) {
        asio::co_spawn(self->ioc, serve_tls(self, std::move(socket)), asio::detached);
      } else {
        asio::co_spawn(self->ioc, serve(self, std::move(socket)), asio::detached);
      }
    }
  }

  // Sends `body` one byte per `every`.
  template <typename Stream>
  static asio::awaitable<boost::system::error_code> trickle(impl* self, Stream& stream,
                                                            const std::string& body,
                                                            std::chrono::milliseconds every) {
    for (char c : body) {
      asio::steady_timer timer(self->ioc);
      timer.expires_after(every);
      auto [tec] = co_await timer.async_wait(use_tuple);
      if (tec) co_return tec;
      beast::get_lowest_layer(stream).expires_after(io_timeout);
      auto [wec, n] = co_await asio::async_write(stream, asio::buffer(&c, 1), use_tuple);
      if (wec) co_return wec;
    }
    co_return boost::system::error_code{};
  }

  static asio::awaitable<void> serve(impl* self, tcp::socket socket) {
    beast::error_code peer_ec;
    const auto peer = socket.remote_endpoint(peer_ec);
    beast::tcp_stream stream(std::move(socket));
    // A local, not a conditional in the co_await: g++ 12 destroys such a temporary twice.
    std::string peer_address = peer_ec ? std::string() : peer.address().to_string();
    co_await exchanges(self, stream, std::move(peer_address));
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  static asio::awaitable<void> serve_tls(impl* self, tcp::socket socket) {
    beast::error_code peer_ec;
    const auto peer = socket.remote_endpoint(peer_ec);
    beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *self->tls);
    beast::get_lowest_layer(stream).expires_after(io_timeout);
    auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
    std::string peer_address = peer_ec ? std::string() : peer.address().to_string();
    if (!hec) co_await exchanges(self, stream, std::move(peer_address));
    beast::error_code ignored;
    beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  // Requests and answers on one connection until either side ends it.
  template <typename Stream>
  static asio::awaitable<void> exchanges(impl* self, Stream& stream, std::string peer) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(1 << 20);
      beast::get_lowest_layer(stream).expires_after(io_timeout);
      auto [read_ec, read_n] = co_await http::async_read(stream, buffer, parser, use_tuple);
      if (read_ec) break;
      const auto req = parser.release();
      stub_request r;
      r.method = std::string(req.method_string());
      r.target = std::string(req.target());
      for (const auto& field : req) {
        r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
      }
      r.body = req.body();
      r.peer = peer;
      {
        std::lock_guard lock(self->mutex);
        self->recorded.push_back(r);
      }
      stub_response answer;
      try {
        answer = self->respond(r);
      } catch (const std::exception& e) {
        answer = stub_response{500, {}, e.what(), {}};
      }
      if (answer.delay.count() > 0) {
        asio::steady_timer timer(self->ioc);
        timer.expires_after(answer.delay);
        auto [tec] = co_await timer.async_wait(use_tuple);
        if (tec) break;
      }
      http::response<http::string_body> res{static_cast<http::status>(answer.status),
                                            req.version()};
      for (const auto& [name, value] : answer.headers) res.insert(name, value);
      res.body() = std::move(answer.body);
      res.prepare_payload();
      res.keep_alive(req.keep_alive());
      beast::get_lowest_layer(stream).expires_after(io_timeout);
      boost::system::error_code wec;
      if (answer.cut_after && req.method() != http::verb::head) {
        http::response<http::empty_body> head{http::response_header<>(res.base())};
        auto [hec, hn] = co_await http::async_write(stream, head, use_tuple);
        if (!hec) {
          const std::size_t n = std::min(*answer.cut_after, res.body().size());
          (void)co_await asio::async_write(stream, asio::buffer(res.body().data(), n), use_tuple);
        }
        break;  // closes the connection mid-body
      }
      if (req.method() == http::verb::head || answer.trickle.count() > 0) {
        // The header of the GET answer (its Content-Length included), without the body.
        http::response<http::empty_body> head{http::response_header<>(res.base())};
        auto [hec, hn] = co_await http::async_write(stream, head, use_tuple);
        wec = hec;
        if (!wec && req.method() != http::verb::head) {
          wec = co_await trickle(self, stream, res.body(), answer.trickle);
        }
      } else {
        auto [gec, gn] = co_await http::async_write(stream, res, use_tuple);
        wec = gec;
      }
      if (wec || !res.keep_alive()) break;
    }
  }
};

stub_response ranged_answer(const std::string& bytes, const stub_request& r) {
  const auto range = r.header("Range");
  if (!range) return stub_response{200, {}, bytes};
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  if (std::sscanf(range->c_str(), "bytes=%lu-%lu", &first, &last) != 2 || bytes.empty() ||
      first > last || first >= bytes.size()) {
    return stub_response{400, {}, ""};
  }
  last = std::min<std::uint64_t>(last, bytes.size() - 1);
  return stub_response{
      206,
      {{"Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                             std::to_string(bytes.size())}},
      bytes.substr(first, last - first + 1)};
}

http_stub::http_stub(handler h, std::string address, std::optional<stub_tls> tls)
    : impl_(std::make_unique<impl>(std::move(h), std::move(address))) {
  if (tls) {
    impl_->tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    impl_->tls->use_certificate_chain_file(tls->cert_file);
    impl_->tls->use_private_key_file(tls->key_file, asio::ssl::context::pem);
  }
  const tcp::endpoint endpoint(asio::ip::make_address(impl_->address), 0);
  if (!endpoint.address().is_loopback()) throw std::invalid_argument("http_stub: not loopback");
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen();
  impl_->port = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->ioc, impl::accept_loop(impl_.get()), asio::detached);
  impl_->thread = std::thread([self = impl_.get()] { self->ioc.run(); });
}

http_stub::~http_stub() {
  impl_->ioc.stop();
  impl_->thread.join();
}

std::uint16_t http_stub::port() const { return impl_->port; }

std::string http_stub::url() const {
  return (impl_->tls ? "https://" : "http://") + impl_->address + ":" + std::to_string(port());
}

std::vector<stub_request> http_stub::requests() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->recorded;
}

unsigned http_stub::connections() const { return impl_->accepted; }

void http_stub::clear_requests() {
  std::lock_guard lock(impl_->mutex);
  impl_->recorded.clear();
}

}  // namespace layercache::testing
