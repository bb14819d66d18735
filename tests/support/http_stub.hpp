// An in-process HTTP (or HTTPS) server on 127.0.0.1 whose answers come from a test's handler:
// fake metadata servers, token endpoints and misbehaving upstreams.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/support/file_server.hpp"

namespace layercache::testing {

struct stub_request : recorded_request {
  std::string body;
  std::string peer;  // the client's address
};

struct stub_response {
  unsigned status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Wait this long before answering (a hanging endpoint); the wait ends early when the stub
  // is destroyed.
  std::chrono::milliseconds delay{0};
  // Not zero: the header at once, then the body one byte at a time, this long apart (a body
  // that trickles); ends early when the client goes or the stub is destroyed.
  std::chrono::milliseconds trickle{0};
  // Set: the header (with the whole body's Content-Length), only this many bytes of the body,
  // and the connection closes — a body that breaks off.
  std::optional<std::size_t> cut_after;
};

// What a registry answers a GET of `bytes` (a blob) with `r`'s Range: 200 and the whole without
// one, 206 with its Content-Range for one range (its end clipped to the blob; of several, the
// first), 400 for a Range it cannot read.
[[nodiscard]] stub_response ranged_answer(const std::string& bytes, const stub_request& r);

// Answers every request with `handler(request)`, called on the stub's own thread (one at a
// time); a HEAD is answered with the header the handler's answer would have (Content-Length
// of its body included) and no body. Every request is recorded before the handler runs. `address`
// must be a loopback address (127.0.0.1, 127.0.0.2, ...). requests()/clear_requests() are
// thread-safe.
// A server certificate chain and key (PEM), e.g. from make_test_certificates.
struct stub_tls {
  std::string cert_file;
  std::string key_file;
};

class http_stub {
 public:
  using handler = std::function<stub_response(const stub_request&)>;
  // With `tls`, HTTPS (url() says https).
  explicit http_stub(handler h, std::string address = "127.0.0.1",
                     std::optional<stub_tls> tls = std::nullopt);
  ~http_stub();
  http_stub(const http_stub&) = delete;
  http_stub& operator=(const http_stub&) = delete;

  [[nodiscard]] std::uint16_t port() const;
  [[nodiscard]] std::string url() const;  // http(s)://ADDRESS:PORT

  [[nodiscard]] std::vector<stub_request> requests() const;
  void clear_requests();
  // Connections accepted so far (clear_requests() leaves it).
  [[nodiscard]] unsigned connections() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace layercache::testing
