// Clients that misbehave, and hostile requests: layercache answers each with a clear 4xx (or
// drops the connection where HTTP leaves nothing to say), keeps serving everyone else, frees
// what the client held, and sends nothing upstream for a request it refuses.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "oci/digest.hpp"
#include "tests/support/exposition.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_connection.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t MiB = 1024 * 1024;

class ClientFaultsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    upstream_ = new registry_process(registry_options{.access_log = true});
    img_ = new image(make_image(image_format::oci, {24 * MiB, 2 * MiB}, 71));
    registry_pusher(upstream_->url()).push_image("team/app", "v1", *img_);
  }
  static void TearDownTestSuite() {
    delete img_;
    delete upstream_;
  }

  void start(std::string_view server_yaml = {}) {
    std::string yaml = "upstreams:\n" + upstream_yaml("local", upstream_->url(), true) +
                       "prefetch: {eager_layers: never, fetch_published: false}\n";
    if (!server_yaml.empty()) yaml += server_yaml;
    proxy_ = std::make_unique<layercache_instance>(yaml);
  }
  std::string blob_path(const blob& b) const { return "/v2/team/app/blobs/" + b.digest.str(); }
  std::string url(std::string_view path) const { return proxy_->url() + std::string(path); }
  // Upstream requests (any method) the registry logged for `needle` so far.
  static std::size_t upstream_requests(std::string_view needle) {
    const std::string log = upstream_->log();
    std::size_t n = 0;
    for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  }
  double metric(std::string_view name, const std::map<std::string, std::string>& labels = {}) {
    return proxy_->metric(name, labels);
  }

  static registry_process* upstream_;
  static image* img_;
  std::unique_ptr<layercache_instance> proxy_;
  http_client client_;
};

registry_process* ClientFaultsTest::upstream_ = nullptr;
image* ClientFaultsTest::img_ = nullptr;

TEST_F(ClientFaultsTest, OversizedHeadersAndHeaderFloodsAre431) {
  start();
  {
    raw_connection c(proxy_->port());
    ASSERT_TRUE(
        c.send("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(40'000, 'a') + "\r\n\r\n"));
    EXPECT_EQ(status_of(c.read(4096, 5s)), 431u);
  }
  {
    raw_connection c(proxy_->port());
    std::string flood = "GET /v2/ HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 5000; ++i) flood += "X-" + std::to_string(i) + ": y\r\n";
    flood += "\r\n";
    (void)c.send(flood);  // the server may close before it has read everything
    EXPECT_EQ(status_of(c.read(4096, 5s)), 431u);
  }
  {
    raw_connection c(proxy_->port());
    ASSERT_TRUE(c.send("THIS IS NOT HTTP\r\n\r\n"));
    const auto answer = c.read(4096, 5s);
    EXPECT_TRUE(answer.empty() || status_of(answer) == 400u) << answer;
  }
  // Still serving.
  EXPECT_EQ(client_.get(url("/v2/")).status, 200u);
}

// The whole of a 431 answer as a client that wrote all of its request reads it: status, and
// an OCI error body of the length announced, up to the server's EOF.
void expect_complete_431(raw_connection& c) {
  const std::string answer = c.read(SIZE_MAX, 5s);
  ASSERT_EQ(status_of(answer), 431u) << answer.substr(0, 300);
  const auto head_end = answer.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos) << answer;
  const std::string body = answer.substr(head_end + 4);
  EXPECT_NE(answer.find("\r\nContent-Length: " + std::to_string(body.size()) + "\r\n"),
            std::string::npos)
      << "incomplete body: " << answer;
  EXPECT_TRUE(body.starts_with(R"({"errors":[{"code":"UNSUPPORTED")")) << body;
}

TEST_F(ClientFaultsTest, HugeHeaderGetsA431TheClientCanRead) {
  // HTTP clients write their whole request before they read. The server stops reading at
  // max_header_size (16 KiB) with most of a 100 KiB header still to come: a socket closed with
  // bytes unread, or receiving more, resets the connection under the client's write, and the
  // client reports the reset instead of the 431.
  start();
  const std::string request =
      "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(100 * 1024, 'a') + "\r\n\r\n";
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    raw_connection c(proxy_->port());
    c.set_send_buffer(4096);
    EXPECT_TRUE(c.send(request)) << "the connection was reset while the request was sent";
    expect_complete_431(c);
  }
  {
    // The race made certain: the rest of the header is sent only once the server has
    // answered and sent its FIN.
    raw_connection c(proxy_->port());
    c.set_send_buffer(4096);
    ASSERT_TRUE(c.send(std::string_view(request).substr(0, 20 * 1024)));
    ASSERT_TRUE(c.wait_for_server_fin(5s));
    EXPECT_TRUE(c.send(std::string_view(request).substr(20 * 1024)))
        << "the connection was reset while the request was sent";
    expect_complete_431(c);
  }
  EXPECT_EQ(client_.get(url("/v2/")).status, 200u);
}

TEST_F(ClientFaultsTest, PipelinedRequestsAreAnsweredInOrder) {
  start();
  raw_connection c(proxy_->port());
  const std::string config = blob_path(img_->config);
  ASSERT_TRUE(
      c.send("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"
             "HEAD " +
             config +
             " HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET " +
             config +
             " HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /v2/team/app/blobs/sha256:zz HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string all;
  for (int i = 0; i < 50 && all.find("DIGEST_INVALID") == std::string::npos; ++i) {
    all += c.read(1 << 20, 200ms);
  }
  std::vector<unsigned> statuses;
  for (auto at = all.find("HTTP/1.1 "); at != std::string::npos;
       at = all.find("HTTP/1.1 ", at + 1)) {
    statuses.push_back(status_of(std::string_view(all).substr(at)));
  }
  EXPECT_EQ(statuses, (std::vector<unsigned>{200, 200, 200, 400})) << all.substr(0, 2000);
  EXPECT_NE(all.find(img_->config.data), std::string::npos) << "the config blob's bytes";
}

TEST_F(ClientFaultsTest, IdleConnectionsAreCappedAndTimedOut) {
  start(
      "server:\n"
      "  listen: [{address: 127.0.0.1:0}]\n"
      "  threads: 2\n"
      "  max_connections: 20\n"
      "  timeouts: {request_header: 1s, idle: 1s}\n");
  std::vector<std::unique_ptr<raw_connection>> idle;
  for (int i = 0; i < 40; ++i) idle.push_back(std::make_unique<raw_connection>(proxy_->port()));
  // Beyond the cap, connections are closed at once.
  int closed_at_once = 0;
  for (auto& c : idle) closed_at_once += c->closed_by_server(50ms) ? 1 : 0;
  EXPECT_GE(closed_at_once, 20);
  // The rest are closed when the header deadline passes (bounded: 1 s + scheduling).
  int closed_later = 0;
  for (auto& c : idle) closed_later += c->closed_by_server(3s) ? 1 : 0;
  EXPECT_EQ(closed_later, 40);
  // A slowloris header (bytes trickling in) gets the same deadline.
  raw_connection slow(proxy_->port());
  bool cut = false;
  for (int i = 0; i < 40 && !cut; ++i) {
    if (!slow.send("X")) cut = true;
    if (slow.closed_by_server(100ms)) cut = true;
  }
  EXPECT_TRUE(cut) << "a header trickling in for 4 s was not cut";
  // Everything held was freed: new clients are served.
  auto r = client_.get(url("/v2/"));
  EXPECT_EQ(r.status, 200u);
  for (int i = 0; i < 50 && metric("layercache_http_open_connections") > 0; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(metric("layercache_http_open_connections"), 0);
}

TEST_F(ClientFaultsTest, AClientThatLeavesMidStreamLeavesTheFillToTheOthers) {
  start();
  const blob& layer = img_->layers[0];  // 24 MiB, cold
  const std::string path = blob_path(layer);
  std::atomic<bool> b_ok{false};
  {
    raw_connection a(proxy_->port());
    ASSERT_TRUE(a.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"));
    const auto first = a.read(256 * 1024, 10s);
    ASSERT_EQ(status_of(first), 200u);
    // B starts while A's fill runs; then A goes away.
    std::thread b([&] {
      http_client c;
      const auto r = c.get(url(path));
      b_ok = r.status == 200 && r.body.size() == layer.data.size() &&
             oci::digest_of(r.body) == layer.digest;
    });
    a.close();
    b.join();
  }
  EXPECT_TRUE(b_ok.load());
  // Each byte was fetched once: chunk fills are shared, A's departure cancelled nothing B
  // needed (fills are not owned by the reader that started them).
  EXPECT_LE(metric("layercache_upstream_received_bytes_total", {{"upstream", "local"}}),
            static_cast<double>(layer.data.size() + img_->layers[1].data.size()));
  // Served again, now from the store, byte for byte.
  const auto again = client_.get(url(path));
  EXPECT_EQ(oci::digest_of(again.body), layer.digest);
  for (int i = 0; i < 50 && metric("layercache_http_open_connections") > 0; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(metric("layercache_http_open_connections"), 0);
}

TEST_F(ClientFaultsTest, ASlowReaderHoldsUpNobody) {
  start();
  const blob& layer = img_->layers[0];
  const std::string path = blob_path(layer);
  raw_connection slow(proxy_->port());
  ASSERT_TRUE(slow.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_EQ(status_of(slow.read(64 * 1024, 10s)), 200u);
  // The slow client reads nothing more; the same blob still reaches another client whole.
  http_client c;
  const auto r = c.request("GET", url(path), {}, {}, 60s);
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(oci::digest_of(r.body), layer.digest);
  // The slow reader is still connected (its socket buffers hold what it has not read) and is
  // served the rest once it reads.
  const auto rest = slow.read(layer.data.size() - 64 * 1024, 30s);
  EXPECT_GE(rest.size(), layer.data.size() - 64 * 1024);
}

TEST_F(ClientFaultsTest, HostileNamesDigestsAndNamespacesNeverReachTheUpstream) {
  start();
  const std::size_t before = upstream_->log().size();
  const std::string digest = img_->config.digest.str();
  struct probe {
    std::string target;
    unsigned status;
  };
  const std::vector<probe> probes = {
      {"/v2/team/../app/blobs/" + digest, 400},
      {"/v2/team/./app/blobs/" + digest, 400},
      {"/v2/team%2Fapp/blobs/" + digest, 400},
      {"/v2/team/%2e%2e/app/blobs/" + digest, 400},
      {"/v2/" + std::string(300, 'a') + "/blobs/" + digest, 400},
      {"/v2/team/app/blobs/sha256:" + std::string(63, 'a'), 400},
      {"/v2/team/app/blobs/sha256:" + std::string(64, 'G'), 400},
      {"/v2/team/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400},
      {"/v2/team/app/manifests/" + std::string(200, 't'), 404},  // no such tag can exist
      {"/v2/team/app/manifests/.INVALID_MANIFEST_NAME", 404},
      {"/v2/team/app/manifests/sha256:xyz", 400},
      {"/v2/team/app/blobs/" + digest + "?ns=169.254.169.254", 403},
      {"/v2/team/app/blobs/" + digest + "?ns=metadata.google.internal", 403},
      {"/v2/team/app/blobs/" + digest + "?ns=127.0.0.1:1", 403},
      {"/v2/team/app/blobs/" + digest + "?ns=127.0.0.1", 403},
      {"/v2/team/app/blobs/" + digest + "?ns=[::1]:80", 400},  // not a valid request target
      {"/v2/team/app/blobs/" + digest + "?ns=%5B::1%5D:80", 403},
      {"/v2/team/app/blobs/" + digest + "?ns=local&ns=evil.example", 400},
  };
  for (const auto& p : probes) {
    SCOPED_TRACE(p.target);
    raw_connection c(proxy_->port());
    ASSERT_TRUE(c.send("GET " + p.target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    const auto answer = c.read(8192, 5s);
    EXPECT_EQ(status_of(answer), p.status) << answer.substr(0, 300);
    EXPECT_NE(answer.find("{\"errors\":[{\"code\":"), std::string::npos) << answer.substr(0, 300);
  }
  EXPECT_EQ(upstream_->log().size(), before) << "a refused request reached the upstream:\n"
                                             << upstream_->log().substr(before);
}

TEST_F(ClientFaultsTest, AbsurdRangesAreBoundedNotAmplified) {
  start();
  const blob& layer = img_->layers[1];  // 2 MiB
  const std::string u = url(blob_path(layer));
  // A last position past 2^64 is past the end like any other (RFC 9110): the whole blob, once.
  auto huge = client_.get(u, {{"Range", "bytes=0-99999999999999999999"}});
  EXPECT_EQ(huge.status, 206u);
  EXPECT_EQ(huge.body.size(), layer.data.size());
  EXPECT_EQ(huge.header("Content-Range"), "bytes 0-" + std::to_string(layer.data.size() - 1) + "/" +
                                              std::to_string(layer.data.size()));
  // A first position past 2^64 is past the end: 416 with the size, not ignored.
  auto beyond = client_.get(u, {{"Range", "bytes=99999999999999999999999-"}});
  EXPECT_EQ(beyond.status, 416u);
  EXPECT_EQ(beyond.header("Content-Range"), "bytes */" + std::to_string(layer.data.size()));
  // More ranges than allowed: 416 with the size.
  std::string many = "bytes=0-0";
  for (int i = 1; i < 1100; ++i) many += "," + std::to_string(i * 2) + "-" + std::to_string(i * 2);
  auto too_many = client_.get(u, {{"Range", many}});
  EXPECT_EQ(too_many.status, 416u);
  EXPECT_EQ(too_many.header("Content-Range"), "bytes */" + std::to_string(layer.data.size()));
  // Overlapping ranges that would multiply the blob: served once, whole, as 200.
  std::string overlap = "bytes=0-";
  for (int i = 0; i < 500; ++i) overlap += ",0-";
  auto amplified = client_.get(u, {{"Range", overlap}});
  EXPECT_EQ(amplified.status, 200u);
  EXPECT_EQ(amplified.body.size(), layer.data.size());
  // Ordinary multi-range requests still get 206 multipart.
  auto two = client_.get(u, {{"Range", "bytes=0-9,100-109"}});
  EXPECT_EQ(two.status, 206u);
  EXPECT_NE(two.header("Content-Type").value_or("").find("multipart/byteranges"),
            std::string::npos);
}

}  // namespace
}  // namespace layercache::testing
