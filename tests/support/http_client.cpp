#include "tests/support/http_client.hpp"

#include <openssl/ssl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cctype>
#include <exception>
#include <stdexcept>

namespace layercache::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

constexpr std::uint64_t body_limit = 512ull << 20;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

struct target {
  bool tls = false;
  std::string host;       // without brackets
  std::string port;       // explicit or the scheme's default
  std::string authority;  // for the Host header
  std::string path;       // origin-form request target
};

target parse_target(std::string_view url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) {
    throw std::runtime_error("http_client: invalid URL '" + std::string(url) +
                             "': " + parsed.error().message());
  }
  const auto& u = *parsed;
  target t;
  if (u.scheme() == "https") {
    t.tls = true;
  } else if (u.scheme() != "http") {
    throw std::runtime_error("http_client: unsupported scheme in '" + std::string(url) + "'");
  }
  t.host = u.host_address();
  if (t.host.empty())
    throw std::runtime_error("http_client: no host in '" + std::string(url) + "'");
  t.port = u.has_port() ? std::string(u.port()) : (t.tls ? "443" : "80");
  t.authority = u.encoded_host_and_port();
  t.path = u.encoded_target();
  if (t.path.empty() || t.path.front() != '/') t.path.insert(0, "/");
  return t;
}

struct exchange {
  http::request<http::string_body> request;
  target where;
  clock::time_point deadline;
  const char* step = "resolve";
};

http_response to_response(http::response<http::string_body>&& res) {
  http_response out;
  out.status = res.result_int();
  for (const auto& field : res) {
    out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  out.body = std::move(res.body());
  return out;
}

template <class Stream>
asio::awaitable<http_response> send_and_receive(Stream& stream, exchange& x) {
  x.step = "write request";
  beast::get_lowest_layer(stream).expires_at(x.deadline);
  co_await http::async_write(stream, x.request, asio::use_awaitable);

  x.step = "read response";
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(body_limit);
  if (x.request.method() == http::verb::head) parser.skip(true);
  co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
  co_return to_response(parser.release());
}

// `x` outlives the coroutine: request() runs the io_context to completion before returning.
asio::awaitable<http_response> run_exchange(exchange* x, ssl::context* tls) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  x->step = "resolve";
  const auto endpoints =
      co_await resolver.async_resolve(x->where.host, x->where.port, asio::use_awaitable);

  beast::tcp_stream tcp_stream(executor);
  tcp_stream.expires_at(x->deadline);
  x->step = "connect";
  co_await tcp_stream.async_connect(endpoints, asio::use_awaitable);

  if (!x->where.tls) {
    auto response = co_await send_and_receive(tcp_stream, *x);
    beast::error_code ignored;
    tcp_stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    co_return response;
  }

  beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp_stream), *tls);
  boost::system::error_code not_ip;
  asio::ip::make_address(x->where.host, not_ip);
  // SNI carries host names only (RFC 6066); the certificate check covers both kinds.
  if (not_ip && SSL_set_tlsext_host_name(stream.native_handle(), x->where.host.c_str()) != 1) {
    throw std::runtime_error("SSL_set_tlsext_host_name failed");
  }
  stream.set_verify_mode(ssl::verify_peer);
  stream.set_verify_callback(ssl::host_name_verification(x->where.host));
  x->step = "TLS handshake";
  co_await stream.async_handshake(ssl::stream_base::client, asio::use_awaitable);
  // The server closes after the response ("Connection: close"); no TLS shutdown needed.
  co_return co_await send_and_receive(stream, *x);
}

}  // namespace

std::optional<std::string> http_response::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return std::nullopt;
}

std::vector<std::string> http_response::headers_named(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) out.push_back(value);
  }
  return out;
}

struct http_client::impl {
  ssl::context tls{ssl::context::tls_client};
};

http_client::http_client(std::string ca_file) : impl_(std::make_unique<impl>()) {
  impl_->tls.set_verify_mode(ssl::verify_peer);
  impl_->tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                         ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  if (ca_file.empty()) {
    impl_->tls.set_default_verify_paths(ec);
  } else {
    impl_->tls.load_verify_file(ca_file, ec);
  }
  if (ec) {
    throw std::runtime_error("http_client: cannot load CA '" + ca_file + "': " + ec.message());
  }
}

http_client::~http_client() = default;
http_client::http_client(http_client&&) noexcept = default;
http_client& http_client::operator=(http_client&&) noexcept = default;

http_response http_client::request(std::string_view method, std::string_view url,
                                   const header_list& headers, std::string body,
                                   std::chrono::milliseconds timeout) {
  exchange x;
  x.where = parse_target(url);
  x.deadline = clock::now() + timeout;
  auto& req = x.request;
  req.version(11);
  req.method_string(method);
  req.target(x.where.path);
  bool has_host = false;
  bool has_agent = false;
  bool has_length = false;
  for (const auto& [name, value] : headers) {
    has_host = has_host || iequals(name, "Host");
    has_agent = has_agent || iequals(name, "User-Agent");
    has_length = has_length || iequals(name, "Content-Length");
    req.insert(name, value);
  }
  if (!has_host) req.set(http::field::host, x.where.authority);
  if (!has_agent) req.set(http::field::user_agent, "layercache-test-client");
  req.set(http::field::connection, "close");
  req.body() = std::move(body);
  if (!has_length) req.prepare_payload();

  const std::string what = std::string(method) + " " + std::string(url);
  asio::io_context ioc;
  std::exception_ptr failure;
  std::optional<http_response> result;
  asio::co_spawn(ioc, run_exchange(&x, &impl_->tls), [&](std::exception_ptr e, http_response r) {
    failure = e;
    if (!e) result = std::move(r);
  });
  ioc.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const boost::system::system_error& e) {
      std::string message = "http_client: " + what + ": " + x.step + ": " + e.code().message();
      if (e.code() == beast::error::timeout) {
        message += " (timeout " + std::to_string(timeout.count()) + " ms)";
      }
      throw std::runtime_error(message);
    } catch (const std::runtime_error&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error("http_client: " + what + ": " + x.step + ": " + e.what());
    }
  }
  if (!result) throw std::runtime_error("http_client: " + what + ": no response");
  return std::move(*result);
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{static_cast<unsigned char>(bytes[i])} << 16) |
                            (std::uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8) |
                            std::uint32_t{static_cast<unsigned char>(bytes[i + 2])};
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t v = std::uint32_t{static_cast<unsigned char>(bytes[i])} << 16;
    if (rest == 2) v |= std::uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string basic_auth_header(std::string_view user, std::string_view password) {
  std::string credentials(user);
  credentials += ':';
  credentials += password;
  return "Basic " + base64_encode(credentials);
}

}  // namespace layercache::testing
