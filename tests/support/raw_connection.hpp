// A raw TCP connection to a loopback port, for tests that send what an HTTP client library
// never would (smuggling attempts, half requests, idle connections).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace layercache::testing {

// A connection to 127.0.0.1:port.
class raw_connection {
 public:
  explicit raw_connection(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect failed");
    }
  }
  ~raw_connection() { close(); }
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // False if the peer closed or reset (EPIPE and the like).
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const auto n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  // Reads until `want` bytes, EOF, or `limit` passes. Returns what arrived.
  std::string read(std::size_t want, std::chrono::milliseconds limit) {
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    char buf[64 * 1024];
    while (out.size() < want) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      const auto n = ::recv(fd_, buf, std::min(sizeof buf, want - out.size()), 0);
      if (n <= 0) {
        eof_ = true;
        break;
      }
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }
  // Shrinks the kernel's send buffer (SO_SNDBUF) so that a large send() is still in progress
  // while the server answers, as over a real network.
  void set_send_buffer(int bytes) {
    (void)::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  }
  // Waits until the server has sent FIN (or reset), without reading what came before it.
  bool wait_for_server_fin(std::chrono::milliseconds limit) {
    pollfd p{fd_, POLLRDHUP, 0};
    return ::poll(&p, 1, static_cast<int>(limit.count())) > 0 &&
           (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }
  // True once the server closed the connection (EOF or reset seen within `limit`).
  bool closed_by_server(std::chrono::milliseconds limit) {
    (void)read(SIZE_MAX, limit);
    return eof_;
  }

 private:
  int fd_ = -1;
  bool eof_ = false;
};

// Status code of the first response in `raw` (0 if there is none).
inline unsigned status_of(std::string_view raw) {
  if (!raw.starts_with("HTTP/1.1 ") || raw.size() < 12) return 0;
  return static_cast<unsigned>(std::stoul(std::string(raw.substr(9, 3))));
}

}  // namespace layercache::testing
