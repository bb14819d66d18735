#include "loadtest/client.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <charconv>
#include <stdexcept>
#include <utility>

namespace layercache::loadtest {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t body_buffer_size = std::size_t{256} * 1024;
constexpr std::size_t max_captured_body = std::size_t{8} * 1024 * 1024;  // manifests
constexpr std::string_view accept_manifests =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";

bool is_redirect(unsigned status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

}  // namespace

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

origin resolve_origin(asio::io_context& io, const http_url& url) {
  tcp::resolver resolver(io);
  boost::system::error_code ec;
  const auto results = resolver.resolve(url.host, url.port, ec);
  if (ec || results.empty()) {
    throw std::runtime_error("cannot resolve " + url.host + ":" + url.port + ": " + ec.message());
  }
  origin o{*results.begin(), url.host + ":" + url.port, url.target, url.tls, url.host};
  while (!o.prefix.empty() && o.prefix.back() == '/') o.prefix.pop_back();
  return o;
}

std::unique_ptr<asio::ssl::context> make_client_tls(const std::string& ca_file, bool insecure) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  if (insecure) {
    ctx->set_verify_mode(asio::ssl::verify_none);
    return ctx;
  }
  boost::system::error_code ec;
  ctx->set_default_verify_paths(ec);  // none found: only ca_file's CAs are trusted
  if (!ca_file.empty()) {
    ctx->load_verify_file(ca_file, ec);
    if (ec) throw std::runtime_error("cannot load CA file " + ca_file + ": " + ec.message());
  }
  ctx->set_verify_mode(asio::ssl::verify_peer);
  return ctx;
}

asio::awaitable<response> connection::send(request_spec spec) {
  response res = co_await send_here(spec);
  for (int hop = 0; hop < max_redirects && res.error.empty() && spec.method != http::verb::head &&
                    is_redirect(res.status);
       ++hop) {
    const auto url = parse_http_url(res.location);
    boost::system::error_code ec;
    const auto address = url ? asio::ip::make_address(url->host, ec) : asio::ip::address{};
    unsigned port = 0;
    const bool port_ok =
        url &&
        std::from_chars(url->port.data(), url->port.data() + url->port.size(), port).ec ==
            std::errc{} &&
        port > 0 && port < 65536;
    if (!url || ec || !port_ok || (url->tls && tls_ == nullptr)) {
      // (a port like "x" would otherwise throw here)
      res.error =
          "redirect to an unsupported place (only http://IP:port, or https://IP:port "
          "from an https origin): " +
          res.location.substr(0, 200);
      break;
    }
    const tcp::endpoint to(address, static_cast<std::uint16_t>(port));
    if (!redirected_ || redirected_origin_->endpoint != to || redirected_origin_->tls != url->tls) {
      redirected_origin_ = std::make_unique<origin>(
          origin{to, url->host + ":" + url->port, "", url->tls, url->host});
      // Registry clients keep credentials off other hosts (a storage host, a CDN).
      const bool same_place = to == origin_->endpoint && url->tls == origin_->tls;
      redirected_ = std::make_unique<connection>(ex_, redirected_origin_.get(), limits_, connects_,
                                                 tls_, same_place ? headers_ : nullptr);
    }
    const double before = res.total_ms;
    spec.target = url->target;
    res = co_await redirected_->send_here(spec);
    res.ttfb_ms += before;
    res.total_ms += before;
  }
  co_return res;
}

void connection::close() {
  // No TLS close_notify: the run is over, and the server sees the TCP close either way.
  boost::system::error_code ignored;
  if (stream_) stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
  if (tls_stream_) {
    beast::get_lowest_layer(*tls_stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
  }
  drop();
}

asio::awaitable<response> connection::send_here(request_spec spec) {
  response res;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = open();
    res = response{};
    bool answered = false;
    co_await exchange(&spec, &res, &answered);
    if (res.error.empty() || !reused || answered) break;
  }
  co_return res;
}

asio::awaitable<bool> connection::connect(response* res) {
  buffer_.clear();
  if (!origin_->tls) {
    stream_.emplace(ex_);
  } else if (tls_ == nullptr) {
    res->error = "connect: https without a TLS context";
    co_return false;
  } else {
    tls_stream_.emplace(ex_, *tls_);
  }
  auto& tcp_layer = stream_ ? *stream_ : beast::get_lowest_layer(*tls_stream_);
  tcp_layer.expires_at(limits_->expiry());
  auto [ec] = co_await tcp_layer.async_connect(origin_->endpoint, use_nothrow);
  ++*connects_;
  if (ec) {
    res->error = "connect: " + ec.message();
    drop();
    co_return false;
  }
  boost::system::error_code ignored;
  tcp_layer.socket().set_option(tcp::no_delay(true), ignored);
  if (!tls_stream_) co_return true;
  // SNI carries host names only (RFC 6066); the certificate check covers addresses too.
  boost::system::error_code not_ip;
  (void)asio::ip::make_address(origin_->host, not_ip);
  if (not_ip &&
      SSL_set_tlsext_host_name(tls_stream_->native_handle(), origin_->host.c_str()) != 1) {
    res->error = "TLS: cannot set SNI " + origin_->host;
    drop();
    co_return false;
  }
  if (SSL_CTX_get_verify_mode(tls_->native_handle()) != SSL_VERIFY_NONE) {
    tls_stream_->set_verify_callback(asio::ssl::host_name_verification(origin_->host));
  }
  tcp_layer.expires_at(limits_->expiry());
  auto [hec] = co_await tls_stream_->async_handshake(asio::ssl::stream_base::client, use_nothrow);
  if (hec) {
    res->error = "TLS handshake: " + hec.message();
    drop();
    co_return false;
  }
  co_return true;
}

asio::awaitable<void> connection::exchange(request_spec* spec, response* res, bool* answered) {
  if (!open()) {
    const bool connected = co_await connect(res);
    if (!connected) co_return;
  }
  if (body_.empty()) body_.resize(body_buffer_size);
  if (tls_stream_) {
    co_await exchange_on(&*tls_stream_, spec, res, answered);
  } else {
    co_await exchange_on(&*stream_, spec, res, answered);
  }
}

template <typename Stream>
asio::awaitable<void> connection::exchange_on(Stream* stream, request_spec* spec, response* res,
                                              bool* answered) {
  auto& tcp_layer = beast::get_lowest_layer(*stream);
  http::request<http::empty_body> req{spec->method, spec->target, 11};
  req.set(http::field::host, origin_->host_header);
  req.set(http::field::user_agent, "layercache-bench");
  if (headers_ != nullptr) {
    for (const auto& h : *headers_) req.set(h.name, h.value);
  }
  if (!spec->range.empty()) req.set(http::field::range, spec->range);
  if (spec->accept_manifests) req.set(http::field::accept, accept_manifests);
  const auto t0 = clock_type::now();
  tcp_layer.expires_at(limits_->expiry());
  auto [wec, wn] = co_await http::async_write(*stream, req, use_nothrow);
  (void)wn;
  if (wec) {
    res->error = "write: " + wec.message();
    drop();
    co_return;
  }
  parser_type parser;
  parser.body_limit(boost::none);
  if (spec->method == http::verb::head) parser.skip(true);
  tcp_layer.expires_at(limits_->expiry());
  auto [hec, hn] = co_await http::async_read_header(*stream, buffer_, parser, use_nothrow);
  if (hec) {
    *answered = hn > 0;
    res->error = "header: " + hec.message();
    drop();
    co_return;
  }
  *answered = true;
  const auto& head = parser.get();
  res->status = head.result_int();
  res->content_type = std::string(head[http::field::content_type]);
  res->location = std::string(head[http::field::location]);
  if (const auto length = parser.content_length()) res->content_length = *length;
  if (const auto ec = co_await read_body(stream, &parser, spec, res, t0)) {
    res->error = "body: " + ec.message();
    drop();
    co_return;
  }
  if (!parser.keep_alive()) drop();
}

template <typename Stream>
asio::awaitable<boost::system::error_code> connection::read_body(Stream* stream,
                                                                 parser_type* parser,
                                                                 const request_spec* spec,
                                                                 response* res,
                                                                 clock_type::time_point t0) {
  auto& tcp_layer = beast::get_lowest_layer(*stream);
  // A redirect's body is not the blob: never hashed or kept.
  const bool redirect = res->status >= 300 && res->status < 400 && !res->location.empty();
  bool first_byte = false;
  const auto take = [&](const char* data, std::size_t n) {
    if (n == 0) return;
    if (!first_byte) {
      first_byte = true;
      res->ttfb_ms = ms_between(t0, clock_type::now());
    }
    res->body_bytes += n;
    if (redirect) return;
    if (spec->hash != nullptr) spec->hash->update(data, n);
    if (spec->capture && res->body.size() + n <= max_captured_body) res->body.append(data, n);
  };
  boost::system::error_code ec;
  if (const auto length = parser->content_length(); length && !parser->is_done()) {
    // Known length (the usual case): take what came with the header, then read the socket
    // straight into the body buffer, bypassing the parser.
    std::uint64_t left = *length;
    const auto early = static_cast<std::size_t>(std::min<std::uint64_t>(buffer_.size(), left));
    const auto early_bytes = buffer_.data();
    take(static_cast<const char*>(early_bytes.data()), early);
    buffer_.consume(early);
    left -= early;
    while (left > 0) {
      tcp_layer.expires_at(limits_->expiry());
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(body_.size(), left));
      const auto into = asio::buffer(body_.data(), want);
      auto [rec, rn] = co_await stream->async_read_some(into, use_nothrow);
      take(body_.data(), rn);
      left -= rn;
      if (rec) {
        ec = rec;
        break;
      }
    }
  } else {
    while (!parser->is_done()) {
      parser->get().body().data = body_.data();
      parser->get().body().size = body_.size();
      tcp_layer.expires_at(limits_->expiry());
      auto [rec, rn] = co_await http::async_read(*stream, buffer_, *parser, use_nothrow);
      (void)rn;
      if (rec == http::error::need_buffer) rec = {};
      take(body_.data(), body_.size() - parser->get().body().size);
      if (rec) {
        ec = rec;
        break;
      }
    }
  }
  const auto t1 = clock_type::now();
  if (!first_byte) res->ttfb_ms = ms_between(t0, t1);
  res->total_ms = ms_between(t0, t1);
  co_return ec;
}

}  // namespace layercache::loadtest
