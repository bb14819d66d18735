// layercachectl's HTTP client of the admin API: one request per connection, plain messages
// for connection failures.
#pragma once

#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <string>
#include <string_view>

namespace layercache::ctl {

struct options {
  std::string host = "127.0.0.1";
  std::string port = "9401";
  std::string token;
  // Each request's deadline; a preload's: how long it may go without progress.
  std::chrono::seconds timeout{600};
};

struct answer {
  unsigned status = 0;
  std::string body;
};

// "host:port" or "[v6]:port", optionally prefixed with http://, into `o`; false when malformed.
bool parse_admin(std::string_view text, options& o);

// "host:port", brackets around an IPv6 host.
[[nodiscard]] std::string where(const options& o);

// One request, one answer. Throws std::runtime_error with a plain message ("cannot connect to
// 127.0.0.1:9401: Connection refused"): never Boost's what(), which names its source files.
answer call(const options& o, boost::beast::http::verb method, const std::string& target,
            std::string body);

// The message of a non-2xx answer: its JSON body's "error" and the status
// ("no upstream is named x (configured: up) (HTTP 400)"), else the body as it is.
[[nodiscard]] std::string error_text(const answer& a);

// `text` percent-encoded for a query parameter's value.
[[nodiscard]] std::string query_value(std::string_view text);

}  // namespace layercache::ctl
