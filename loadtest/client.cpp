#include "loadtest/client.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
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
  origin o{*results.begin(), url.host + ":" + url.port, url.target};
  while (!o.prefix.empty() && o.prefix.back() == '/') o.prefix.pop_back();
  return o;
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
    if (!url || ec || !port_ok) {  // (a port like "x" would otherwise throw here)
      res.error =
          "redirect to an unsupported place (only http://IP:port): " + res.location.substr(0, 200);
      break;
    }
    const tcp::endpoint to(address, static_cast<std::uint16_t>(port));
    if (!redirected_ || redirected_origin_->endpoint != to) {
      redirected_origin_ = std::make_unique<origin>(origin{to, url->host + ":" + url->port, ""});
      redirected_ = std::make_unique<connection>(ex_, redirected_origin_.get(), limits_, connects_);
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
  if (!stream_) return;
  boost::system::error_code ignored;
  stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream_.reset();
}

asio::awaitable<response> connection::send_here(request_spec spec) {
  response res;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = stream_.has_value();
    res = response{};
    bool answered = false;
    co_await exchange(&spec, &res, &answered);
    if (res.error.empty() || !reused || answered) break;
  }
  co_return res;
}

asio::awaitable<bool> connection::connect(response* res) {
  stream_.emplace(ex_);
  stream_->expires_at(limits_->expiry());
  auto [ec] = co_await stream_->async_connect(origin_->endpoint, use_nothrow);
  ++*connects_;
  if (ec) {
    res->error = "connect: " + ec.message();
    stream_.reset();
    co_return false;
  }
  boost::system::error_code ignored;
  stream_->socket().set_option(tcp::no_delay(true), ignored);
  buffer_.clear();
  co_return true;
}

asio::awaitable<void> connection::exchange(request_spec* spec, response* res, bool* answered) {
  if (!stream_ && !co_await connect(res)) co_return;
  if (body_.empty()) body_.resize(body_buffer_size);
  http::request<http::empty_body> req{spec->method, spec->target, 11};
  req.set(http::field::host, origin_->host_header);
  req.set(http::field::user_agent, "layercache-bench");
  if (!spec->range.empty()) req.set(http::field::range, spec->range);
  if (spec->accept_manifests) req.set(http::field::accept, accept_manifests);
  const auto t0 = clock_type::now();
  stream_->expires_at(limits_->expiry());
  auto [wec, wn] = co_await http::async_write(*stream_, req, use_nothrow);
  (void)wn;
  if (wec) {
    res->error = "write: " + wec.message();
    stream_.reset();
    co_return;
  }
  parser_type parser;
  parser.body_limit(boost::none);
  if (spec->method == http::verb::head) parser.skip(true);
  stream_->expires_at(limits_->expiry());
  auto [hec, hn] = co_await http::async_read_header(*stream_, buffer_, parser, use_nothrow);
  if (hec) {
    *answered = hn > 0;
    res->error = "header: " + hec.message();
    stream_.reset();
    co_return;
  }
  *answered = true;
  const auto& head = parser.get();
  res->status = head.result_int();
  res->content_type = std::string(head[http::field::content_type]);
  res->location = std::string(head[http::field::location]);
  if (const auto length = parser.content_length()) res->content_length = *length;
  if (const auto ec = co_await read_body(&parser, spec, res, t0)) {
    res->error = "body: " + ec.message();
    stream_.reset();
    co_return;
  }
  if (!parser.keep_alive()) stream_.reset();
}

asio::awaitable<boost::system::error_code> connection::read_body(parser_type* parser,
                                                                 const request_spec* spec,
                                                                 response* res,
                                                                 clock_type::time_point t0) {
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
      stream_->expires_at(limits_->expiry());
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(body_.size(), left));
      const auto into = asio::buffer(body_.data(), want);
      auto [rec, rn] = co_await stream_->async_read_some(into, use_nothrow);
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
      stream_->expires_at(limits_->expiry());
      auto [rec, rn] = co_await http::async_read(*stream_, buffer_, *parser, use_nothrow);
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
