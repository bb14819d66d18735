// A small synchronous HTTP/1.1 client for tests (Beast underneath, kept out of this header).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace layercache::testing {

using header_list = std::vector<std::pair<std::string, std::string>>;

struct http_response {
  unsigned status = 0;
  header_list headers;  // in wire order, names as sent
  std::string body;     // empty for HEAD

  // The first header called `name` (case-insensitive), if any.
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
  // Every header called `name` (case-insensitive), in wire order.
  [[nodiscard]] std::vector<std::string> headers_named(std::string_view name) const;
};

// Sends one request per connection ("Connection: close"), does not follow redirects and does
// not retry. https URLs are verified against `ca_file` (PEM) — or the system trust store when
// it is empty — with SNI and a host-name (or IP SAN) check against the URL's host.
// Each request() uses its own io_context, so one http_client may be used from several threads.
class http_client {
 public:
  explicit http_client(std::string ca_file = {});
  ~http_client();
  http_client(http_client&&) noexcept;
  http_client& operator=(http_client&&) noexcept;
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  // `url` is absolute: http://127.0.0.1:PORT/path?query or https://host:port/... . `headers`
  // are sent as given (several with one name are all sent); Host, User-Agent and Content-Length
  // are added unless given. Any status is returned as a response; throws std::runtime_error
  // for a bad URL, connection, TLS or protocol failure, a body over 512 MiB, or when the whole
  // exchange takes longer than `timeout`.
  http_response request(std::string_view method, std::string_view url,
                        const header_list& headers = {}, std::string body = {},
                        std::chrono::milliseconds timeout = std::chrono::seconds(30));

  http_response get(std::string_view url, const header_list& headers = {}) {
    return request("GET", url, headers);
  }
  http_response head(std::string_view url, const header_list& headers = {}) {
    return request("HEAD", url, headers);
  }

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// The value of an Authorization header for HTTP Basic: "Basic " + base64(user ":" password).
[[nodiscard]] std::string basic_auth_header(std::string_view user, std::string_view password);

[[nodiscard]] std::string base64_encode(std::string_view bytes);

}  // namespace layercache::testing
