// The throttling relay of loadtest/ (layercache-throttle) against an echo server on loopback:
// the delay and the byte rate it adds are at least what was asked (only lower bounds on time:
// the machine is shared and noisy), bytes arrive intact and in order, and half-closes pass
// through in both directions.
#include "loadtest/throttle.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace layercache::loadtest {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr auto io_deadline = 30s;  // any single wait in a test; a failure, never a hang

// Polls until `done()` or io_deadline: the relay updates its counters on its own thread, just
// after the bytes they count have been handed to the kernel (and maybe already read).
template <class Predicate>
bool eventually(Predicate done) {
  const auto deadline = clock_type::now() + io_deadline;
  while (!done()) {
    if (clock_type::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Echoes every byte back as it arrives; on end of stream it half-closes its side in turn
// (and counts the end of streams it saw). Runs on its own thread until destroyed.
class echo_server {
 public:
  echo_server() : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~echo_server() {
    io_.stop();
    thread_.join();
  }
  echo_server(const echo_server&) = delete;
  echo_server& operator=(const echo_server&) = delete;

  [[nodiscard]] std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  [[nodiscard]] int eofs_seen() const { return eofs_.load(); }

 private:
  asio::awaitable<void> accept_loop() {
    constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
    for (int accepted = 0; accepted < 100; ++accepted) {
      auto [ec, socket] = co_await acceptor_.async_accept(use_nothrow);
      if (ec) co_return;
      asio::co_spawn(io_, echo(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> echo(tcp::socket socket) {
    constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
    std::vector<char> buf(32 * 1024);
    while (true) {
      auto [ec, n] = co_await socket.async_read_some(asio::buffer(buf), use_nothrow);
      if (n > 0) {
        auto [wec, written] =
            co_await asio::async_write(socket, asio::buffer(buf.data(), n), use_nothrow);
        (void)written;
        if (wec) co_return;
      }
      if (ec == asio::error::eof) {
        eofs_.fetch_add(1);
        boost::system::error_code ignored;
        socket.shutdown(tcp::socket::shutdown_send, ignored);
        co_return;
      }
      if (ec) co_return;
    }
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::atomic<int> eofs_{0};
  std::thread thread_;
};

// A blocking client socket on raw POSIX calls, every wait bounded by poll().
class client_socket {
 public:
  explicit client_socket(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    int one = 1;
    if (connected_) ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~client_socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  client_socket(const client_socket&) = delete;
  client_socket& operator=(const client_socket&) = delete;

  [[nodiscard]] bool connected() const { return connected_; }

  bool send_all(std::string_view data) {
    std::size_t off = 0;
    const auto deadline = clock_type::now() + io_deadline;
    while (off < data.size() && clock_type::now() < deadline) {
      if (!wait(POLLOUT, deadline)) return false;
      const auto n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return off == data.size();
  }

  void shutdown_send() { ::shutdown(fd_, SHUT_WR); }

  // Reads exactly n bytes; nullopt on end of stream, error or the deadline.
  std::optional<std::string> recv_exact(std::size_t n) {
    std::string out;
    out.resize(n);
    std::size_t off = 0;
    const auto deadline = clock_type::now() + io_deadline;
    while (off < n) {
      if (!wait(POLLIN, deadline)) return std::nullopt;
      const auto got = ::recv(fd_, out.data() + off, n - off, 0);
      if (got <= 0) return std::nullopt;
      off += static_cast<std::size_t>(got);
    }
    return out;
  }

  // True when the next read sees end of stream (and no data) before the deadline.
  bool at_eof() {
    const auto deadline = clock_type::now() + io_deadline;
    if (!wait(POLLIN, deadline)) return false;
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

  // True when the peer ends the connection (end of stream or reset) before the deadline.
  bool closed_by_peer() {
    const auto deadline = clock_type::now() + io_deadline;
    if (!wait(POLLIN, deadline)) return false;
    char c;
    return ::recv(fd_, &c, 1, 0) <= 0;
  }

 private:
  bool wait(short events, clock_type::time_point deadline) {
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, events, 0};
      const int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r > 0) return true;
      if (r == 0) return false;
    }
  }

  int fd_;
  bool connected_ = false;
};

std::string random_data(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(rng());
  return out;
}

throttle_options relay_to(std::uint16_t port) {
  throttle_options o;
  o.target_port = port;
  return o;
}

TEST(Throttle, RelaysBytesIntactAndCountsThem) {
  echo_server echo;
  throttle relay(relay_to(echo.port()));
  client_socket c(relay.port());
  ASSERT_TRUE(c.connected());
  const auto data = random_data(3 * 1024 * 1024 + 17, 1);
  std::thread writer([&] { EXPECT_TRUE(c.send_all(data)); });
  const auto back = c.recv_exact(data.size());
  writer.join();
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(*back == data) << "echoed bytes differ";
  EXPECT_TRUE(eventually([&] {
    const auto n = relay.counters();
    return n.bytes_to_target == data.size() && n.bytes_from_target == data.size();
  }));
  const auto n = relay.counters();
  EXPECT_EQ(n.connections, 1u);
  EXPECT_EQ(n.bytes_to_target, data.size());
  EXPECT_EQ(n.bytes_from_target, data.size());
  EXPECT_EQ(n.failed_connects, 0u);
}

TEST(Throttle, AddsTheDelayInEachDirection) {
  echo_server echo;
  auto o = relay_to(echo.port());
  o.delay = 40ms;  // a round trip gains at least 80 ms
  throttle relay(o);
  client_socket c(relay.port());
  ASSERT_TRUE(c.connected());
  for (int i = 0; i < 3; ++i) {
    const std::string ping = "ping " + std::to_string(i);
    const auto t0 = clock_type::now();
    ASSERT_TRUE(c.send_all(ping));
    const auto back = c.recv_exact(ping.size());
    const double rtt = seconds_since(t0);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, ping);
    EXPECT_GE(rtt, 0.080) << "round trip " << i;
  }
}

TEST(Throttle, WaitsTheConnectDelayBeforeTheFirstByte) {
  echo_server echo;
  auto o = relay_to(echo.port());
  o.connect_delay = 150ms;
  o.delay = 10ms;
  const auto t0 = clock_type::now();
  throttle relay(o);
  client_socket c(relay.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send_all("hello"));
  const auto back = c.recv_exact(5);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, "hello");
  EXPECT_GE(seconds_since(t0), 0.150 + 0.020);
}

TEST(Throttle, CapsTheByteRatePerConnection) {
  echo_server echo;
  auto o = relay_to(echo.port());
  o.bytes_per_second = 4'000'000;
  throttle relay(o);
  client_socket c(relay.port());
  ASSERT_TRUE(c.connected());
  const auto data = random_data(6'000'000, 2);
  const auto t0 = clock_type::now();
  std::thread writer([&] { EXPECT_TRUE(c.send_all(data)); });
  const auto back = c.recv_exact(data.size());
  const double elapsed = seconds_since(t0);
  writer.join();
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(*back == data) << "echoed bytes differ";
  // Each direction starts with a full bucket (80 kB at this rate): the rest takes its time.
  const double burst = 80'000;
  EXPECT_GE(elapsed, (6'000'000 - burst) / 4'000'000.0);
}

TEST(Throttle, RateIsPerConnection) {
  // Two connections at once each get the full rate: together they move twice as much.
  echo_server echo;
  auto o = relay_to(echo.port());
  o.bytes_per_second = 4'000'000;
  throttle relay(o);
  const auto data = random_data(3'000'000, 3);
  const auto t0 = clock_type::now();
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&] {
      client_socket c(relay.port());
      if (!c.connected()) return;
      std::thread writer([&] { c.send_all(data); });
      const auto back = c.recv_exact(data.size());
      writer.join();
      if (back && *back == data) good.fetch_add(1);
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(good.load(), 2);
  EXPECT_GE(seconds_since(t0), (3'000'000 - 80'000) / 4'000'000.0);
  EXPECT_EQ(relay.counters().connections, 2u);
  EXPECT_TRUE(eventually([&] { return relay.counters().bytes_from_target == 6'000'000u; }))
      << relay.counters().bytes_from_target;
}

TEST(Throttle, PassesHalfCloseBothWays) {
  echo_server echo;
  auto o = relay_to(echo.port());
  o.delay = 20ms;
  throttle relay(o);
  client_socket c(relay.port());
  ASSERT_TRUE(c.connected());
  const auto data = random_data(200'000, 4);
  ASSERT_TRUE(c.send_all(data));
  c.shutdown_send();
  // The data still comes back after our half-close, then the server's own half-close.
  const auto back = c.recv_exact(data.size());
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(*back == data);
  EXPECT_TRUE(c.at_eof());
  EXPECT_EQ(echo.eofs_seen(), 1);
}

TEST(Throttle, ClosesTheClientWhenTheTargetRefuses) {
  std::uint16_t closed_port = 0;
  {
    asio::io_context io;
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    closed_port = a.local_endpoint().port();
  }
  throttle relay(relay_to(closed_port));
  client_socket c(relay.port());
  ASSERT_TRUE(c.connected());
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_EQ(relay.counters().failed_connects, 1u);
  // The relay forgets the connection just after closing it, on its own thread.
  EXPECT_TRUE(eventually([&] { return relay.counters().active == 0; }));
}

TEST(Throttle, RefusesABadListenAddress) {
  auto o = relay_to(1);
  o.listen_address = "not an address";
  EXPECT_THROW(throttle{o}, std::runtime_error);
}

}  // namespace
}  // namespace layercache::loadtest
