// A TLS client as any HTTPS client is: OpenSSL on a blocking loopback socket, verifying the
// server's certificate for 127.0.0.1 against `ca_file`. For the tests of layercache's TLS
// listener (tests/unit/server/tls_stream_test.cpp, tests/integration/tls_listener_test.cpp),
// which add what each needs on top.
#pragma once

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

namespace layercache::testing {

class tls_client {
 public:
  // `receive_buffer` > 0: the socket's SO_RCVBUF; `read_bound_seconds` > 0: SO_RCVTIMEO, so a
  // read the server never answers ends.
  tls_client(std::uint16_t port, const std::string& ca_file, int receive_buffer = 0,
             long read_bound_seconds = 0)
      : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    if (read_bound_seconds > 0) {
      const timeval bound{read_bound_seconds, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
    }
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
    SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    ssl_ = SSL_new(ctx_);
    SSL_set1_host(ssl_, "127.0.0.1");
    SSL_set_fd(ssl_, fd_);
  }
  ~tls_client() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  tls_client(const tls_client&) = delete;
  tls_client& operator=(const tls_client&) = delete;

  [[nodiscard]] bool connected() const { return connected_; }
  bool handshake() { return connected_ && SSL_connect(ssl_) == 1; }
  bool write(std::string_view data) {
    std::size_t n = 0;
    return SSL_write_ex(ssl_, data.data(), data.size(), &n) == 1 && n == data.size();
  }
  // `size` bytes, or fewer when the connection ends first (or a bounded read times out).
  std::string read(std::size_t size) {
    std::string out;
    std::string buf(std::size_t{64} * 1024, '\0');
    while (out.size() < size) {
      std::size_t n = 0;
      if (SSL_read_ex(ssl_, buf.data(), std::min(buf.size(), size - out.size()), &n) != 1) break;
      out.append(buf.data(), n);
    }
    return out;
  }

 protected:
  int fd_;
  bool connected_ = false;
  SSL_CTX* ctx_ = SSL_CTX_new(TLS_client_method());
  SSL* ssl_ = nullptr;
};

}  // namespace layercache::testing
