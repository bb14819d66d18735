// tls_stream (server/tls_stream.hpp) on a loopback connection, against a real OpenSSL client
// (blocking, verifying the certificate) on a thread of its own; the server's side runs on the
// test's thread. No wall-clock assertions: deadlines are checked by their outcome.
#include "server/tls_stream.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"
#include "tests/support/tls_client.hpp"

namespace layercache::server {
namespace {

using namespace std::chrono_literals;
using boost::system::error_code;

const testing::tls_files& certificates() {
  static const testing::temp_dir dir;
  static const testing::tls_files files = testing::make_test_certificates(dir.path());
  return files;
}

std::string pattern(std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 7919) >> 5);
  return s;
}

// A TLS client as any (tests/support/tls_client.hpp), and what these tests do beside reading
// and writing.
class client : public testing::tls_client {
 public:
  explicit client(std::uint16_t port) : tls_client(port, certificates().ca_cert) {
    EXPECT_TRUE(connected());
  }

  // What a read says once the server is done: SSL_ERROR_ZERO_RETURN after its close_notify.
  int read_end() {
    char c = 0;
    std::size_t n = 0;
    const int ret = SSL_read_ex(ssl_, &c, 1, &n);
    return SSL_get_error(ssl_, ret);
  }
  void close_notify() { SSL_shutdown(ssl_); }
  void fin() { ::shutdown(fd_, SHUT_WR); }
  void reset() {
    const linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd_);
    fd_ = -1;
  }
  // The bytes of a record of `data`, encrypted but not sent: the test sends them itself.
  std::string record_of(std::string_view data) {
    BIO* mem = BIO_new(BIO_s_mem());
    SSL_set0_wbio(ssl_, mem);
    std::size_t n = 0;
    EXPECT_EQ(SSL_write_ex(ssl_, data.data(), data.size(), &n), 1);
    char* p = nullptr;
    const long size = BIO_get_mem_data(mem, &p);
    std::string bytes(p, static_cast<std::size_t>(size));
    BIO* sock = BIO_new_socket(fd_, BIO_NOCLOSE);
    SSL_set0_wbio(ssl_, sock);
    return bytes;
  }
  bool send_raw(std::string_view bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  const char* version() { return SSL_get_version(ssl_); }
};

class TlsStreamTest : public ::testing::Test {
 protected:
  TlsStreamTest() {
    context_.use_certificate_chain_file(certificates().server_cert);
    context_.use_private_key_file(certificates().server_key, asio::ssl::context::pem);
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  // The server's side of a client that has connected (the listen backlog holds it).
  std::unique_ptr<tls_stream> accept() {
    return std::make_unique<tls_stream>(acceptor_.accept(), context_.native_handle());
  }
  // Runs io_ until `done` (bounded: a hang fails the test instead of stalling it).
  void run_until(const bool& done) {
    for (int i = 0; i < 600 && !done; ++i) {
      io_.run_one_for(100ms);
      if (io_.stopped()) io_.restart();
    }
    ASSERT_TRUE(done) << "the operation never completed";
  }
  error_code handshake(tls_stream& s) {
    error_code out;
    bool done = false;
    s.async_handshake([&](error_code ec) {
      out = ec;
      done = true;
    });
    run_until(done);
    return out;
  }
  std::pair<error_code, std::size_t> read_some(tls_stream& s, std::string& into) {
    std::pair<error_code, std::size_t> out;
    bool done = false;
    s.async_read_some(asio::buffer(into), [&](error_code ec, std::size_t n) {
      out = {ec, n};
      done = true;
    });
    run_until(done);
    return out;
  }
  // One async_write_some, through a coroutine (use_awaitable, as the session's writes).
  template <typename Buffers>
  std::pair<error_code, std::size_t> write_some(tls_stream& s, const Buffers& buffers) {
    std::pair<error_code, std::size_t> out;
    bool done = false;
    asio::co_spawn(
        io_,
        [](tls_stream* s, Buffers b) -> asio::awaitable<std::pair<error_code, std::size_t>> {
          auto [ec, n] = co_await s->async_write_some(b, asio::as_tuple(asio::use_awaitable));
          co_return std::pair{ec, n};
        }(&s, buffers),
        [&](const std::exception_ptr&, std::pair<error_code, std::size_t> r) {
          out = r;
          done = true;
        });
    run_until(done);
    return out;
  }
  error_code shutdown(tls_stream& s) {
    error_code out;
    bool done = false;
    s.async_shutdown([&](error_code ec) {
      out = ec;
      done = true;
    });
    run_until(done);
    return out;
  }

  asio::io_context io_;
  asio::ssl::context context_{asio::ssl::context::tls_server};
  asio::ip::tcp::acceptor acceptor_{io_, {asio::ip::make_address("127.0.0.1"), 0}};
};

TEST_F(TlsStreamTest, HandshakesAndCarriesBytesBothWays) {
  client c(port());
  auto s = accept();
  std::thread peer([&] {
    ASSERT_TRUE(c.handshake());
    EXPECT_STREQ(c.version(), "TLSv1.3");
    EXPECT_TRUE(c.write("ping"));
    EXPECT_EQ(c.read(4), "pong");
  });
  EXPECT_FALSE(handshake(*s));
  std::string buf(100, '\0');
  const auto [ec, n] = read_some(*s, buf);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(buf.substr(0, n), "ping");
  const auto [wec, written] = write_some(*s, asio::buffer(std::string_view("pong")));
  EXPECT_FALSE(wec);
  EXPECT_EQ(written, 4u);
  peer.join();
}

TEST_F(TlsStreamTest, OneWriteOfALargeBufferArrivesIntact) {
  const std::string data = pattern(24 * 1024 * 1024 + 123);
  client c(port());
  auto s = accept();
  std::string got;
  std::thread peer([&] {
    ASSERT_TRUE(c.handshake());
    got = c.read(data.size());
  });
  ASSERT_FALSE(handshake(*s));
  // One operation writes it all, however often the socket was full.
  const auto [ec, n] = write_some(*s, asio::buffer(data));
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(n, data.size());
  peer.join();
  EXPECT_TRUE(got == data) << "received " << got.size() << " of " << data.size() << " bytes";
}

TEST_F(TlsStreamTest, ABufferSequenceArrivesInOrder) {
  // A header's small pieces, a body, a tail: what Beast's serializer hands a stream.
  const std::string a = "HTTP/1.1 200 OK\r\n", b = "Content-Length: 5\r\n\r\n",
                    body = pattern(3 << 20), tail = "\r\n", empty;
  const std::array<asio::const_buffer, 5> pieces{asio::buffer(a), asio::buffer(empty),
                                                 asio::buffer(b), asio::buffer(body),
                                                 asio::buffer(tail)};
  const std::string all = a + b + body + tail;
  client c(port());
  auto s = accept();
  std::string got;
  std::thread peer([&] {
    ASSERT_TRUE(c.handshake());
    got = c.read(all.size());
  });
  ASSERT_FALSE(handshake(*s));
  const auto [ec, n] = write_some(*s, pieces);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(n, all.size());
  peer.join();
  EXPECT_TRUE(got == all);
}

TEST_F(TlsStreamTest, ReadsARecordInSmallPiecesAndARecordThatArrivesInPieces) {
  client c(port());
  auto s = accept();
  const std::string big = pattern(40'000);  // three records
  std::thread peer([&] {
    ASSERT_TRUE(c.handshake());
    EXPECT_TRUE(c.write(big));
  });
  ASSERT_FALSE(handshake(*s));
  std::string got;
  std::string buf(1000, '\0');
  for (int i = 0; i < 100 && got.size() < big.size(); ++i) {
    const auto [ec, n] = read_some(*s, buf);
    ASSERT_FALSE(ec) << ec.message();
    got.append(buf.data(), n);
  }
  EXPECT_TRUE(got == big);
  peer.join();

  // A record whose bytes come a few at a time: the read waits for the whole record.
  const std::string record = c.record_of("split");
  ASSERT_TRUE(c.send_raw(std::string_view(record).substr(0, 3)));  // part of the header
  error_code ec;
  std::size_t n = 0;
  bool done = false;
  s->async_read_some(asio::buffer(buf), [&](error_code e, std::size_t k) {
    ec = e;
    n = k;
    done = true;
  });
  io_.poll();
  ASSERT_TRUE(c.send_raw(std::string_view(record).substr(3, 10)));
  io_.poll();
  EXPECT_FALSE(done) << "a read completed from part of a record";
  ASSERT_TRUE(c.send_raw(std::string_view(record).substr(13)));
  run_until(done);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(buf.substr(0, n), "split");
}

TEST_F(TlsStreamTest, CloseNotifyIsEndOfFileAndShutdownAnswersIt) {
  client c(port());
  auto s = accept();
  int end = 0;
  std::thread peer([&] {
    ASSERT_TRUE(c.handshake());
    c.close_notify();
    end = c.read_end();
  });
  ASSERT_FALSE(handshake(*s));
  std::string buf(100, '\0');
  EXPECT_EQ(read_some(*s, buf).first, asio::error::eof);
  EXPECT_FALSE(shutdown(*s));
  peer.join();
  EXPECT_EQ(end, SSL_ERROR_ZERO_RETURN) << "the client saw no close_notify";
}

TEST_F(TlsStreamTest, AFinWithoutCloseNotifyIsATruncatedStream) {
  client c(port());
  auto s = accept();
  std::thread peer([&] {
    ASSERT_TRUE(c.handshake());
    c.fin();
  });
  ASSERT_FALSE(handshake(*s));
  peer.join();
  std::string buf(100, '\0');
  EXPECT_EQ(read_some(*s, buf).first, asio::ssl::error::stream_truncated);
  // A fatal error ends the session: later operations fail at once, shutdown included.
  EXPECT_EQ(read_some(*s, buf).first, asio::ssl::error::stream_truncated);
  EXPECT_TRUE(shutdown(*s));
}

TEST_F(TlsStreamTest, AResetFailsReadsAndWritesWithoutASignal) {
  client c(port());
  auto s = accept();
  std::thread peer([&] {
    ASSERT_TRUE(c.handshake());
    c.reset();
  });
  ASSERT_FALSE(handshake(*s));
  peer.join();
  // No SIGPIPE (this test binary does not ignore it): a write to a reset connection fails.
  const std::string data = pattern(1 << 20);
  const auto [wec, n] = write_some(*s, asio::buffer(data));
  EXPECT_TRUE(wec);
  std::string buf(100, '\0');
  EXPECT_TRUE(read_some(*s, buf).first);
}

TEST_F(TlsStreamTest, AWriteDeadlineCutsAClientThatStopsReading) {
  client c(port());
  auto s = accept();
  std::thread peer([&] { ASSERT_TRUE(c.handshake()); });
  ASSERT_FALSE(handshake(*s));
  peer.join();
  s->next_layer().expires_after(300ms);
  const std::string data =
      pattern(std::size_t{64} * 1024 * 1024);  // far more than the sockets hold
  const auto [ec, n] = write_some(*s, asio::buffer(data));
  EXPECT_EQ(ec, beast::error::timeout) << ec.message();
  EXPECT_LT(n, data.size());
  EXPECT_FALSE(s->next_layer().socket().is_open()) << "the deadline closes the socket";
  std::string buf(100, '\0');
  EXPECT_EQ(read_some(*s, buf).first, beast::error::timeout);
}

TEST_F(TlsStreamTest, AHandshakeDeadlineCutsAClientThatSendsNothing) {
  client c(port());  // connected, no ClientHello
  auto s = accept();
  s->next_layer().expires_after(200ms);
  EXPECT_EQ(handshake(*s), beast::error::timeout);
}

TEST_F(TlsStreamTest, AShorterDeadlineReplacesALongerOne) {
  client c(port());
  auto s = accept();
  std::thread peer([&] {
    ASSERT_TRUE(c.handshake());
    EXPECT_TRUE(c.write("one"));
  });
  s->next_layer().expires_after(1h);  // the timer is armed for this one: the read below waits
  ASSERT_FALSE(handshake(*s));
  std::string buf(100, '\0');
  EXPECT_FALSE(read_some(*s, buf).first);
  peer.join();
  s->next_layer().expires_after(200ms);  // nothing more comes: cut after this, not an hour
  EXPECT_EQ(read_some(*s, buf).first, beast::error::timeout);
}

TEST_F(TlsStreamTest, CloseAbortsAWaitingOperation) {
  client c(port());
  auto s = accept();
  std::thread peer([&] { ASSERT_TRUE(c.handshake()); });
  ASSERT_FALSE(handshake(*s));
  peer.join();
  std::string buf(100, '\0');
  bool done = false;
  error_code ec;
  s->async_read_some(asio::buffer(buf), [&](error_code e, std::size_t) {
    ec = e;
    done = true;
  });
  io_.poll();
  EXPECT_FALSE(done);
  s->next_layer().close();
  run_until(done);
  EXPECT_EQ(ec, asio::error::operation_aborted);
  EXPECT_TRUE(read_some(*s, buf).first) << "a closed socket is never read";
}

TEST_F(TlsStreamTest, TheLowestLayerReadsTheSocketUnderItsDeadline) {
  client c(port());
  auto s = accept();
  std::thread peer([&] { ASSERT_TRUE(c.handshake()); });
  ASSERT_FALSE(handshake(*s));
  peer.join();
  ASSERT_TRUE(c.send_raw("raw"));
  std::string buf(100, '\0');
  auto read_raw = [&] {
    std::pair<error_code, std::size_t> out;
    bool done = false;
    s->next_layer().async_read_some(asio::buffer(buf), [&](error_code ec, std::size_t n) {
      out = {ec, n};
      done = true;
    });
    run_until(done);
    return out;
  };
  const auto [ec, n] = read_raw();
  EXPECT_FALSE(ec);
  EXPECT_EQ(buf.substr(0, n), "raw");
  s->next_layer().expires_after(100ms);
  EXPECT_EQ(read_raw().first, beast::error::timeout);
}

TEST_F(TlsStreamTest, AFailedHandshakeLeavesNothingBehindForTheNext) {
  {
    client plain(port());
    auto s = accept();
    EXPECT_TRUE(plain.send_raw("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const error_code ec = handshake(*s);
    EXPECT_EQ(ec.category(), asio::error::get_ssl_category()) << ec.message();
  }
  // An error another connection left in this thread's OpenSSL error queue must not be read as
  // this one's (SSL_get_error would say SSL_ERROR_SSL instead of WANT_READ).
  client c(port());
  auto s = accept();
  std::thread peer([&] {
    ASSERT_TRUE(c.handshake());
    EXPECT_TRUE(c.write("after"));
  });
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
  ASSERT_FALSE(handshake(*s));
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
  std::string buf(100, '\0');
  const auto [ec, n] = read_some(*s, buf);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(buf.substr(0, n), "after");
  peer.join();
}

}  // namespace
}  // namespace layercache::server
