#include "daemon/ctl_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>
#include <stdexcept>

namespace layercache::ctl {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

bool parse_admin(std::string_view text, options& o) {
  if (text.starts_with("http://")) text.remove_prefix(7);
  while (text.ends_with('/')) text.remove_suffix(1);
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) return false;
  std::string_view host = text.substr(0, colon);
  if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);
  if (host.empty()) return false;
  o.host = std::string(host);
  o.port = std::string(text.substr(colon + 1));
  return true;
}

std::string where(const options& o) {
  const bool v6 = o.host.find(':') != std::string::npos;
  return (v6 ? "[" + o.host + "]" : o.host) + ":" + o.port;
}

answer call(const options& o, http::verb method, const std::string& target, std::string body) {
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  beast::error_code ec;
  const auto endpoints = resolver.resolve(o.host, o.port, ec);
  if (ec) throw std::runtime_error("cannot resolve " + where(o) + ": " + ec.message());
  stream.expires_after(o.timeout);
  stream.connect(endpoints, ec);
  if (ec) throw std::runtime_error("cannot connect to " + where(o) + ": " + ec.message());
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, where(o));
  req.set(http::field::user_agent, "layercachectl");
  if (!o.token.empty()) req.set(http::field::authorization, "Bearer " + o.token);
  // Every state-changing call says JSON (the admin API refuses those that do not).
  if (!body.empty() || method != http::verb::get) {
    req.set(http::field::content_type, "application/json");
  }
  req.body() = std::move(body);
  req.prepare_payload();
  req.keep_alive(false);
  http::write(stream, req, ec);
  if (ec) throw std::runtime_error("sending to " + where(o) + ": " + ec.message());
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::uint64_t{256} * 1024 * 1024);
  http::read(stream, buffer, parser, ec);
  if (ec) throw std::runtime_error("no answer from " + where(o) + ": " + ec.message());
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  return answer{parser.get().result_int(), parser.get().body()};
}

std::string error_text(const answer& a) {
  boost::system::error_code ec;
  const auto v = boost::json::parse(a.body, ec);
  if (!ec && v.is_object()) {
    if (const auto* e = v.as_object().if_contains("error"); e != nullptr && e->is_string()) {
      return std::string(e->as_string()) + " (HTTP " + std::to_string(a.status) + ")";
    }
  }
  return std::to_string(a.status) + " " + trimmed(a.body);
}

std::string query_value(std::string_view text) {
  static constexpr std::string_view hex = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 || c == '-' || c == '.' || c == '_' || c == '~' || c == '/' ||
        c == ':') {
      out += c;
    } else {
      out += '%';
      out += hex[u >> 4U];
      out += hex[u & 15U];
    }
  }
  return out;
}

}  // namespace layercache::ctl
