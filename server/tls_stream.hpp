// The server's TLS stream (issue 22, "HTTPS"): OpenSSL reads and writes the socket itself, so
// one async_write_some of a large buffer writes record after record while the socket takes
// them — no copy beyond OpenSSL's encryption, no scheduler round trip and no timer per record —
// and an operation waits on the socket (async_wait) only when OpenSSL says WANT_READ or
// WANT_WRITE. A drop-in for beast::ssl_stream<beast::tcp_stream> in the session template
// (server/session.cpp). Include only from server/*.cpp and its tests (brings in Asio).
#pragma once

#include <array>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

#include "asio/names.hpp"

struct ssl_st;
struct ssl_ctx_st;

namespace layercache::server {

// How far one step of an operation got: finished (no `wait`; `ec` is its outcome), or stopped
// until the socket is ready for `wait`.
struct tls_progress {
  boost::system::error_code ec;
  std::optional<asio::socket_base::wait_type> wait;
};

// The socket under a tls_stream, and the deadline of the stream's operations. The meaning is
// beast::tcp_stream's: expires_after before an operation; an operation still waiting on the
// socket when the deadline passes fails with beast::error::timeout, and the socket is closed.
// But setting the deadline only stores a time: the timer is armed when an operation first has
// to wait on the socket and is left armed; when it fires before the deadline (which moved on
// since), it is armed again. So a deadline costs no system call per record or per operation.
// Not thread-safe: every call on the socket's executor (one worker's io_context).
class deadline_socket {
 public:
  using clock = std::chrono::steady_clock;

  // Puts `socket` (connected) in non-blocking mode: OpenSSL reads and writes it directly.
  explicit deadline_socket(asio::ip::tcp::socket socket);
  ~deadline_socket();
  deadline_socket(const deadline_socket&) = delete;
  deadline_socket& operator=(const deadline_socket&) = delete;

  asio::any_io_executor get_executor();
  asio::ip::tcp::socket& socket();
  // The deadline of the operations from now on (until set again).
  void expires_after(clock::duration d);
  void expires_never();
  // Closes the socket (idempotent); operations waiting on it complete with operation_aborted.
  void close();

  // For the stream's operations: a wait on the socket starts with begin_wait (an error: the
  // socket is closed — beast::error::timeout when the deadline closed it — or the deadline has
  // passed, which closes it) and ends with end_wait, which turns a wait the deadline cut into
  // beast::error::timeout.
  [[nodiscard]] boost::system::error_code begin_wait();
  [[nodiscard]] boost::system::error_code end_wait(boost::system::error_code ec);
  // Why the socket is closed: beast::error::timeout when the deadline closed it.
  [[nodiscard]] boost::system::error_code closed_error() const;

  // Reads what arrives on the socket itself (under the TLS), waiting under the deadline: the
  // lingering close drops what the client still sends this way. Completes with
  // void(error_code, std::size_t); error::eof at the client's FIN.
  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token);

 private:
  struct raw_read;
  struct state;  // shared with the timer's handler, which may outlive this
  // Arms the timer for the deadline. When it fires: nothing when no operation waits (the next
  // wait arms it again); armed again when the deadline moved on; else the socket is closed.
  static void arm(const std::shared_ptr<state>& s);
  std::shared_ptr<state> state_;
};

namespace tls_detail {

// The first non-empty buffer of a sequence (an empty one when all are).
template <typename Buffer, typename Buffers>
Buffer first_buffer(const Buffers& buffers) {
  for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
       ++it) {
    const Buffer b(*it);
    if (b.size() > 0) return b;
  }
  return Buffer();
}

// Drives `step` (tls_progress step()) to its end, waiting on the socket whenever it asks to;
// completes with (error, step.bytes()) or, for steps without bytes, (error). A step that ends
// without any wait is completed through a post, never inside the initiating call.
template <typename Step>
class socket_op {
 public:
  socket_op(deadline_socket& socket, Step step) : socket_(&socket), step_(std::move(step)) {}

  template <typename Self>
  void operator()(Self& self, boost::system::error_code ec = {}) {
    if (phase_ == phase::posted) return complete(self, result_);
    if (phase_ == phase::waiting) {
      ec = socket_->end_wait(ec);
      if (ec) return complete(self, ec);
    }
    const tls_progress p = step_();
    if (!p.wait) return finish(self, p.ec);
    if (const auto err = socket_->begin_wait()) return finish(self, err);
    phase_ = phase::waiting;
    socket_->socket().async_wait(*p.wait, std::move(self));
  }

 private:
  enum class phase { start, waiting, posted };

  template <typename Self>
  void finish(Self& self, boost::system::error_code ec) {
    if (phase_ == phase::waiting) return complete(self, ec);  // resumed by a wait: not inline
    phase_ = phase::posted;
    result_ = ec;
    asio::post(std::move(self));
  }

  template <typename Self>
  void complete(Self& self, boost::system::error_code ec) {
    if constexpr (requires(const Step& s) { s.bytes(); }) {
      self.complete(ec, step_.bytes());
    } else {
      self.complete(ec);
    }
  }

  deadline_socket* socket_;
  Step step_;
  phase phase_ = phase::start;
  boost::system::error_code result_;
};

}  // namespace tls_detail

struct deadline_socket::raw_read {
  deadline_socket* socket = nullptr;
  asio::mutable_buffer buffer;
  std::size_t n = 0;
  tls_progress operator()();
  std::size_t bytes() const { return n; }
};

template <typename MutableBuffers, typename Token>
auto deadline_socket::async_read_some(const MutableBuffers& buffers, Token&& token) {
  return asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
      tls_detail::socket_op<raw_read>(
          *this, raw_read{this, tls_detail::first_buffer<asio::mutable_buffer>(buffers)}),
      token, get_executor());
}

// A TLS server connection on an accepted socket. Operations complete with Asio's meanings:
// error::eof when the client sent close_notify, ssl::error::stream_truncated when it closed
// the connection without one, the SSL error category for protocol failures (e.g. a failed
// handshake), beast::error::timeout when the deadline (next_layer().expires_after) passed
// while waiting. After a fatal error every operation fails with it. At most one read and one
// write outstanding; not thread-safe (one worker's io_context). Not movable: OpenSSL's BIO
// points into it.
class tls_stream {
 public:
  using executor_type = asio::any_io_executor;
  using next_layer_type = deadline_socket;

  // `context` (the listener's, outliving the stream) makes the connection's SSL; when OpenSSL
  // cannot, the handshake fails.
  tls_stream(asio::ip::tcp::socket socket, ssl_ctx_st* context);
  ~tls_stream();
  tls_stream(const tls_stream&) = delete;
  tls_stream& operator=(const tls_stream&) = delete;

  executor_type get_executor() { return next_.get_executor(); }
  deadline_socket& next_layer() { return next_; }
  ssl_st* native_handle() { return ssl_; }

  // The server's side of the handshake. Completes with void(error_code).
  template <typename Token>
  auto async_handshake(Token&& token) {
    return run<void(boost::system::error_code)>(handshake_step{this}, token);
  }
  // Reads what one record (or what is left of one) holds, into the first non-empty buffer.
  // Completes with void(error_code, std::size_t).
  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return run<void(boost::system::error_code, std::size_t)>(
        read_step{this, tls_detail::first_buffer<asio::mutable_buffer>(buffers)}, token);
  }
  // Writes all of `buffers` (up to their first max_buffers pieces), waiting for the socket as
  // often as needed; completes early only on an error. Small pieces in a row (a header's) go
  // out as one record. Completes with void(error_code, std::size_t).
  template <typename ConstBuffers, typename Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    write_step step{this};
    for (auto it = asio::buffer_sequence_begin(buffers);
         it != asio::buffer_sequence_end(buffers) && step.count < max_buffers; ++it) {
      step.buffers[step.count++] = asio::const_buffer(*it);
    }
    return run<void(boost::system::error_code, std::size_t)>(step, token);
  }
  // Sends close_notify and waits for the client's (or its FIN). Completes with
  // void(error_code).
  template <typename Token>
  auto async_shutdown(Token&& token) {
    return run<void(boost::system::error_code)>(shutdown_step{this}, token);
  }

  static constexpr std::size_t max_buffers = 32;

 private:
  template <typename Signature, typename Step, typename Token>
  auto run(Step step, Token& token) {
    return asio::async_compose<Token, Signature>(
        tls_detail::socket_op<Step>(next_, std::move(step)), token, get_executor());
  }

  struct handshake_step {
    tls_stream* s = nullptr;
    tls_progress operator()() { return s->handshake(); }
  };
  struct read_step {
    tls_stream* s = nullptr;
    asio::mutable_buffer buffer;
    std::size_t n = 0;
    tls_progress operator()() { return s->read(buffer, n); }
    std::size_t bytes() const { return n; }
  };
  struct write_step {
    tls_stream* s = nullptr;
    std::array<asio::const_buffer, max_buffers> buffers{};
    std::size_t count = 0;
    std::size_t next = 0;        // the first buffer not yet handed to OpenSSL
    asio::const_buffer pending;  // what SSL_write is writing: part of a buffer, or scratch_
    std::size_t written = 0;
    tls_progress operator()() { return s->write(*this); }
    std::size_t bytes() const { return written; }
  };
  struct shutdown_step {
    tls_stream* s = nullptr;
    tls_progress operator()() { return s->shutdown(); }
  };
  // What the BIO reads and writes: the socket's descriptor while it is open, never a closed
  // one's number (which another connection may have by now).
  struct bio_target {
    asio::ip::tcp::socket* socket = nullptr;
    int error = 0;  // errno of the last failed send or recv
  };

  tls_progress handshake();
  tls_progress read(asio::mutable_buffer buffer, std::size_t& n);
  tls_progress write(write_step& w);
  tls_progress shutdown();
  // Whether an SSL call may run now: the socket is open and no fatal error came before.
  [[nodiscard]] std::optional<tls_progress> cannot_call();
  // What an SSL call's result `ret` means (SSL_get_error); a fatal error is kept in failed_.
  tls_progress outcome(int ret);
  // The next piece for SSL_write: the next buffer, or small ones in a row copied into scratch_.
  asio::const_buffer next_piece(write_step& w);

  deadline_socket next_;
  bio_target bio_;
  ssl_st* ssl_ = nullptr;
  boost::system::error_code failed_;
  std::vector<char> scratch_;
};

}  // namespace layercache::server
