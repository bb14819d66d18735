// layercached's TLS listener (server/tls_stream.hpp under the session) as an HTTPS client sees
// it: keep-alive requests and a blob on one connection, the header and write deadlines of
// `server.timeouts`, a 431 the client can read. The client is OpenSSL on a blocking socket,
// every read bounded by SO_RCVTIMEO.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"
#include "tests/support/tls_client.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t MiB = std::size_t{1024} * 1024;

// An HTTPS client on one connection: OpenSSL, blocking, reads bounded by 20 s.
class tls_connection : public tls_client {
 public:
  tls_connection(std::uint16_t port, const std::string& ca_file, int receive_buffer = 0)
      : tls_client(port, ca_file, receive_buffer, 20) {}

  bool send(std::string_view data) { return write(data); }
  // One response: its header and a Content-Length body.
  std::string response() {
    std::string head;
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < std::size_t{64} * 1024) {
      const std::string c = read(1);
      if (c.empty()) return head;
      head += c;
    }
    const auto at = head.find("\r\nContent-Length: ");
    if (at == std::string::npos) return head;
    return head + read(std::stoull(head.substr(at + 18)));
  }
  // Whether the server ended the connection (a read gets no byte).
  bool ended() { return read(1).empty(); }
  // Whether the server closed the TCP connection under a client that never began TLS.
  bool closed_before_handshake() {
    char c = 0;
    return ::recv(fd_, &c, 1, 0) <= 0;
  }
};

unsigned status_of(std::string_view response) {
  return response.starts_with("HTTP/1.1 ") && response.size() >= 12
             ? static_cast<unsigned>(std::stoul(std::string(response.substr(9, 3))))
             : 0;
}

std::string body_of(const std::string& response) {
  const auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? std::string() : response.substr(at + 4);
}

class TlsListenerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    upstream_ = new registry_process();
    img_ = new image(make_image(image_format::oci, {24 * MiB, 3 * MiB}, 22));
    registry_pusher(upstream_->url()).push_image("team/app", "v1", *img_);
    dir_ = new temp_dir();
    certs_ = new tls_files(make_test_certificates(dir_->path()));
  }
  static void TearDownTestSuite() {
    delete certs_;
    delete dir_;
    delete img_;
    delete upstream_;
  }
  void start(std::string_view timeouts = "{}") {
    proxy_ = std::make_unique<layercache_instance>(
        "server:\n  threads: 1\n  timeouts: " + std::string(timeouts) +
        "\n  listen:\n    - address: 127.0.0.1:0\n      tls:\n        cert_file: " +
        certs_->server_cert + "\n        key_file: " + certs_->server_key + "\nupstreams:\n" +
        upstream_yaml("local", upstream_->url(), true) +
        "prefetch: {eager_layers: never, fetch_published: false}\n");
  }
  std::unique_ptr<tls_connection> connect(int receive_buffer = 0) {
    return std::make_unique<tls_connection>(proxy_->port(), certs_->ca_cert, receive_buffer);
  }
  static std::string get(const blob& b) {
    return "GET /v2/team/app/blobs/" + b.digest.str() + " HTTP/1.1\r\nHost: x\r\n\r\n";
  }

  static registry_process* upstream_;
  static image* img_;
  static temp_dir* dir_;
  static tls_files* certs_;
  std::unique_ptr<layercache_instance> proxy_;
};

registry_process* TlsListenerTest::upstream_ = nullptr;
image* TlsListenerTest::img_ = nullptr;
temp_dir* TlsListenerTest::dir_ = nullptr;
tls_files* TlsListenerTest::certs_ = nullptr;

TEST_F(TlsListenerTest, KeepAliveRequestsAndBlobsOnOneConnection) {
  start();
  auto c = connect();
  ASSERT_TRUE(c->handshake());
  ASSERT_TRUE(c->send("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(status_of(c->response()), 200u);
  for (int round = 0; round < 2; ++round) {  // cold, then from the cache
    SCOPED_TRACE(round);
    for (const blob* b : {&img_->layers[1], &img_->layers[0]}) {
      ASSERT_TRUE(c->send(get(*b)));
      const std::string r = c->response();
      ASSERT_EQ(status_of(r), 200u) << r.substr(0, 300);
      EXPECT_TRUE(body_of(r) == b->data) << body_of(r).size() << " bytes of " << b->data.size();
    }
  }
  const std::string range = "GET /v2/team/app/blobs/" + img_->layers[0].digest.str() +
                            " HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-66535\r\n\r\n";
  ASSERT_TRUE(c->send(range));
  const std::string r = c->response();
  EXPECT_EQ(status_of(r), 206u);
  EXPECT_TRUE(body_of(r) == img_->layers[0].data.substr(1000, 65536));
}

TEST_F(TlsListenerTest, AClientThatNeverSendsItsHeaderIsCut) {
  start("{request_header: 1s, idle: 1s}");
  auto silent = connect();  // not even a ClientHello: the handshake has the header's deadline
  EXPECT_TRUE(silent->closed_before_handshake());
  auto quiet = connect();
  ASSERT_TRUE(quiet->handshake());
  EXPECT_TRUE(quiet->ended());
}

TEST_F(TlsListenerTest, AClientThatStopsReadingIsCutAfterTheWriteTimeout) {
  start("{write: 1s}");
  {
    // From the cache: a fill slower than the client reads (a sanitizer build) would make the
    // server wait on the upstream, not on the client.
    auto warm = connect();
    ASSERT_TRUE(warm->handshake());
    ASSERT_TRUE(warm->send(get(img_->layers[0])));
    ASSERT_EQ(status_of(warm->response()), 200u);
  }
  auto c = connect(64 * 1024);
  ASSERT_TRUE(c->handshake());
  ASSERT_TRUE(c->send(get(img_->layers[0])));
  EXPECT_EQ(c->read(MiB).size(), MiB);
  std::this_thread::sleep_for(3s);  // the client stops reading for longer than `write`
  const std::string rest = c->read(img_->layers[0].data.size());
  EXPECT_LT(rest.size(), img_->layers[0].data.size() - MiB) << "the server waited";
}

TEST_F(TlsListenerTest, AHugeHeaderGetsA431TheClientCanRead) {
  start();
  auto c = connect();
  ASSERT_TRUE(c->handshake());
  ASSERT_TRUE(c->send("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " +
                      std::string(std::size_t{100} * 1024, 'a') + "\r\n\r\n"));
  const std::string r = c->response();
  EXPECT_EQ(status_of(r), 431u) << r.substr(0, 300);
  EXPECT_TRUE(body_of(r).starts_with(R"({"errors":[{"code":"UNSUPPORTED")")) << r;
}

}  // namespace
}  // namespace layercache::testing
