#include "server/tls_stream.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <cerrno>
#include <cstring>

namespace layercache::server {

using boost::system::error_code;

struct deadline_socket::state {
  explicit state(asio::ip::tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
  asio::ip::tcp::socket socket;
  asio::steady_timer timer;
  clock::time_point deadline = clock::time_point::max();
  clock::time_point armed_at = clock::time_point::max();  // the timer's expiry; max: not armed
  std::uint64_t generation = 0;  // of the timer's wait; a handler of an older one does nothing
  int waiting = 0;               // operations waiting on the socket
  bool timed_out = false;        // the deadline closed the socket
};

namespace {

void close_socket(asio::ip::tcp::socket& socket) {
  error_code ignored;
  socket.close(ignored);
}

}  // namespace

void deadline_socket::arm(const std::shared_ptr<state>& s) {
  s->armed_at = s->deadline;
  const std::uint64_t generation = ++s->generation;
  s->timer.expires_at(s->deadline);  // cancels an earlier wait: its generation is past
  s->timer.async_wait([weak = std::weak_ptr(s), generation](error_code ec) {
    const auto s = weak.lock();
    if (!s || s->generation != generation) return;
    s->armed_at = clock::time_point::max();
    if (ec || s->waiting == 0 || !s->socket.is_open()) return;
    if (clock::now() < s->deadline) {
      if (s->deadline != clock::time_point::max()) arm(s);
      return;
    }
    s->timed_out = true;
    close_socket(s->socket);
  });
}

deadline_socket::deadline_socket(asio::ip::tcp::socket socket)
    : state_(std::make_shared<state>(std::move(socket))) {
  error_code ec;
  state_->socket.non_blocking(true, ec);
  if (ec) close_socket(state_->socket);  // every operation then fails: the socket is closed
}

deadline_socket::~deadline_socket() { close(); }

asio::any_io_executor deadline_socket::get_executor() { return state_->socket.get_executor(); }
asio::ip::tcp::socket& deadline_socket::socket() { return state_->socket; }

void deadline_socket::expires_after(clock::duration d) {
  const auto now = clock::now();
  state_->deadline = d >= clock::time_point::max() - now ? clock::time_point::max() : now + d;
}

void deadline_socket::expires_never() { state_->deadline = clock::time_point::max(); }

void deadline_socket::close() {
  close_socket(state_->socket);
  state_->timer.cancel();
}

error_code deadline_socket::closed_error() const {
  if (state_->timed_out) return beast::error::timeout;
  return asio::error::bad_descriptor;
}

error_code deadline_socket::begin_wait() {
  state& s = *state_;
  if (!s.socket.is_open()) return closed_error();
  if (s.deadline != clock::time_point::max()) {
    if (clock::now() >= s.deadline) {
      s.timed_out = true;
      close();
      return beast::error::timeout;
    }
    if (s.armed_at > s.deadline) arm(state_);
  }
  ++s.waiting;
  return {};
}

error_code deadline_socket::end_wait(error_code ec) {
  --state_->waiting;
  if (ec == asio::error::operation_aborted && state_->timed_out) return beast::error::timeout;
  return ec;
}

tls_progress deadline_socket::raw_read::operator()() {
  asio::ip::tcp::socket& s = socket->socket();
  if (!s.is_open()) return {socket->closed_error(), {}};
  error_code ec;
  n = s.read_some(buffer, ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) {
    return {{}, asio::socket_base::wait_read};
  }
  return {ec, {}};
}

namespace {

// OpenSSL's BIO on the socket: send with MSG_NOSIGNAL (a client gone must not raise SIGPIPE,
// which OpenSSL's own socket BIO's write() would) and recv, on the descriptor of an open
// socket only.
template <typename Target>
int target_fd(BIO* bio) {
  auto* target = static_cast<Target*>(BIO_get_data(bio));
  if (!target->socket->is_open()) {
    target->error = EBADF;
    return -1;
  }
  return target->socket->native_handle();
}

template <typename Target>
int bio_write(BIO* bio, const char* data, int size) {
  BIO_clear_retry_flags(bio);
  const int fd = target_fd<Target>(bio);
  if (fd < 0) return -1;
  const ssize_t n = ::send(fd, data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
  if (n >= 0) return static_cast<int>(n);
  static_cast<Target*>(BIO_get_data(bio))->error = errno;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(bio);
  return -1;
}

template <typename Target>
int bio_read(BIO* bio, char* data, int size) {
  BIO_clear_retry_flags(bio);
  const int fd = target_fd<Target>(bio);
  if (fd < 0) return -1;
  const ssize_t n = ::recv(fd, data, static_cast<std::size_t>(size), 0);
  if (n >= 0) return static_cast<int>(n);  // 0: the client's FIN
  static_cast<Target*>(BIO_get_data(bio))->error = errno;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_read(bio);
  return -1;
}

long bio_ctrl(BIO* /*bio*/, int command, long /*number*/, void* /*pointer*/) {
  return command == BIO_CTRL_FLUSH ? 1 : 0;  // nothing is buffered here
}

template <typename Target>
BIO_METHOD* socket_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "layercache socket");
    if (m == nullptr) return m;
    BIO_meth_set_write(m, bio_write<Target>);
    BIO_meth_set_read(m, bio_read<Target>);
    BIO_meth_set_ctrl(m, bio_ctrl);
    return m;
  }();
  return method;
}

}  // namespace

tls_stream::tls_stream(asio::ip::tcp::socket socket, ssl_ctx_st* context)
    : next_(std::move(socket)), bio_{&next_.socket()} {
  BIO_METHOD* method = socket_method<bio_target>();
  BIO* bio = method != nullptr ? BIO_new(method) : nullptr;
  ssl_ = bio != nullptr ? SSL_new(context) : nullptr;
  if (ssl_ == nullptr) {
    if (bio != nullptr) BIO_free(bio);
    failed_ = error_code(static_cast<int>(ERR_get_error()), asio::error::get_ssl_category());
    if (!failed_) failed_ = asio::error::no_memory;
    return;
  }
  BIO_set_data(bio, &bio_);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_, bio, bio);  // the SSL owns the BIO
  // As Asio's engine sets them: partial and moving writes, and record buffers given back
  // while idle (nginx sets it too; docs/benchmarks.md measured clearing it as noise).
  SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                         SSL_MODE_RELEASE_BUFFERS);
  // One recv takes what has arrived (Asio's engine read 17 KiB at a time too), not a record's
  // header and then its body.
  SSL_set_read_ahead(ssl_, 1);
  SSL_set_accept_state(ssl_);
}

tls_stream::~tls_stream() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

std::optional<tls_progress> tls_stream::cannot_call() {
  if (failed_) return tls_progress{failed_, {}};
  if (!next_.socket().is_open()) return tls_progress{next_.closed_error(), {}};
  // A worker thread serves many connections: what another one left in the thread's error
  // queue must not be read as this one's.
  ERR_clear_error();
  bio_.error = 0;
  return std::nullopt;
}

tls_progress tls_stream::outcome(int ret) {
  const int error = SSL_get_error(ssl_, ret);
  switch (error) {
    case SSL_ERROR_NONE:
      return {};
    case SSL_ERROR_WANT_READ:
      return {{}, asio::socket_base::wait_read};
    case SSL_ERROR_WANT_WRITE:
      return {{}, asio::socket_base::wait_write};
    case SSL_ERROR_ZERO_RETURN:  // close_notify: not fatal, shutdown may still answer it
      return {asio::error::eof, {}};
    case SSL_ERROR_SYSCALL:
      failed_ = bio_.error != 0 ? error_code(bio_.error, boost::system::system_category())
                                : error_code(asio::ssl::error::stream_truncated);
      break;
    case SSL_ERROR_SSL:
      if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        failed_ = asio::ssl::error::stream_truncated;  // a FIN without close_notify
      } else {
        failed_ = error_code(static_cast<int>(ERR_get_error()), asio::error::get_ssl_category());
      }
      break;
    default:
      failed_ = error_code(error, asio::error::get_ssl_category());
      break;
  }
  if (!failed_) failed_ = asio::ssl::error::unspecified_system_error;
  return {failed_, {}};
}

tls_progress tls_stream::handshake() {
  if (auto stop = cannot_call()) return *stop;
  const int ret = SSL_do_handshake(ssl_);
  return ret == 1 ? tls_progress{} : outcome(ret);
}

tls_progress tls_stream::read(asio::mutable_buffer buffer, std::size_t& n) {
  if (buffer.size() == 0) return {};
  if (auto stop = cannot_call()) return *stop;
  const int ret = SSL_read_ex(ssl_, buffer.data(), buffer.size(), &n);
  return ret == 1 ? tls_progress{} : outcome(ret);
}

asio::const_buffer tls_stream::next_piece(write_step& w) {
  constexpr std::size_t record = std::size_t{16} * 1024;
  const asio::const_buffer first = w.buffers[w.next];
  if (first.size() >= record || w.next + 1 == w.count ||
      first.size() + w.buffers[w.next + 1].size() > record) {
    ++w.next;
    return first;
  }
  scratch_.clear();
  while (w.next < w.count && scratch_.size() + w.buffers[w.next].size() <= record) {
    const auto* p = static_cast<const char*>(w.buffers[w.next].data());
    scratch_.insert(scratch_.end(), p, p + w.buffers[w.next].size());
    ++w.next;
  }
  return asio::buffer(scratch_);
}

// Record after record while the socket takes them: SSL_write (partial writes on) returns after
// each record it has sent.
tls_progress tls_stream::write(write_step& w) {
  for (;;) {
    if (w.pending.size() == 0) {
      if (w.next == w.count) return {};
      w.pending = next_piece(w);
      if (w.pending.size() == 0) continue;
    }
    if (auto stop = cannot_call()) return *stop;
    std::size_t n = 0;
    const int ret = SSL_write_ex(ssl_, w.pending.data(), w.pending.size(), &n);
    if (ret != 1) return outcome(ret);
    w.pending += n;
    w.written += n;
  }
}

// As Asio's engine: SSL_shutdown sends close_notify (0: the client's is still to come), then
// again to read the client's; OpenSSL drops application data arriving meanwhile.
tls_progress tls_stream::shutdown() {
  for (int call = 0; call < 2; ++call) {
    if (auto stop = cannot_call()) return *stop;
    const int ret = SSL_shutdown(ssl_);
    if (ret == 1) return {};
    if (ret < 0) return outcome(ret);
  }
  return {};
}

}  // namespace layercache::server
