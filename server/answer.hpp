// What a handler returns: the plan of one response (status, fields, and a body held or
// streamed), which the session writes (server/session.cpp). A handler never touches the
// client's connection, so handlers are tested without sockets (tests/unit/server). Include
// only from server/*.cpp and their tests (brings in Beast's fields).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "asio/names.hpp"
#include "content/blob_source.hpp"
#include "metrics/metrics.hpp"

namespace layercache::server {

using request = http::request<http::empty_body>;

// Takes the next piece of a body; false when the client is gone (stop writing).
using piece_sink = content::blob_source::sink;

// A body written piece by piece as its bytes arrive.
class body_source {
 public:
  enum class end {
    done,         // every byte was given to the sink
    cut,          // the client is gone, or the body must not end normally: close
    unavailable,  // no byte could be had: before any piece, the client gets a 502 instead
  };
  virtual ~body_source() = default;
  virtual asio::awaitable<end> write(const piece_sink& out) = 0;
};

// The plan of one response. Docker-Distribution-API-Version, Content-Length (or chunked) and
// Connection are the session's to write.
struct answer {
  unsigned status = 200;
  http::fields fields;
  std::string body;  // the whole body, unless `stream` writes it
  // A held body: the Content-Length a HEAD answer announces when it differs from the body's.
  // A streamed body: its length (none: chunked), announced for HEAD as well.
  std::optional<std::uint64_t> length;
  // What `stream` needs alive until it ends beside what the worker keeps (a client presenting
  // one client's credentials, upstream.access: client). Declared first: destroyed last.
  std::shared_ptr<void> holds;
  std::unique_ptr<body_source> stream;  // null: `body` is the body
  // A streamed body's header goes out before its first piece (a relay: the upstream's header
  // is known); otherwise with the first piece, so that `unavailable` can still become a 502.
  bool header_first = false;
  std::string unavailable;  // the 502's message when `stream` ends unavailable
};

// A response with an OCI error body ({"errors":[…]}); 405 also says what is allowed.
[[nodiscard]] answer error_answer(unsigned status, std::string_view code, std::string_view message);

using clock = std::chrono::steady_clock;

// What one request/response exchange did: for metrics and the access log. Handlers fill in
// what they learn (route, source, upstream, blob report); the session the rest.
struct exchange {
  clock::time_point start = clock::now();
  std::optional<clock::time_point> header_at;  // response header written
  unsigned status = 0;                         // 0: no response header was written
  std::uint64_t bytes = 0;                     // body bytes written
  metrics::route kind = metrics::route::other;
  metrics::source from = metrics::source::local;
  std::string upstream;                      // configured name, when one was chosen
  std::optional<content::read_report> blob;  // where blob bytes came from
};

}  // namespace layercache::server
