// layercache in front of a real docker-registry: the OCI read API passed through byte-exact,
// routing by ns= and path prefix, TLS and Basic upstreams, and blob redirects.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "oci/digest.hpp"
#include "tests/support/file_server.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

const header_list kAcceptAll = {{"Accept", std::string(media_type::accept_all_manifests)}};

// One registry seeded with the four manifest kinds, shared by the tests of this file.
class ProxyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    upstream_ = new registry_process();
    oci_image_ = new image(make_image(image_format::oci, {300'000, 1'200'000, 50'000}, 1));
    docker_image_ = new image(make_image(image_format::docker, {700'000, 20'000}, 2));
    arm_image_ = new image(make_image(image_format::oci, {100'000}, 3, "arm64"));
    oci_index_ =
        new blob(make_index(image_format::oci, {{oci_image_, "amd64"}, {arm_image_, "arm64"}}));
    docker_list_ = new blob(make_index(image_format::docker, {{docker_image_, "amd64"}}));
    registry_pusher push(upstream_->url());
    push.push_image("team/app", "oci", *oci_image_);
    push.push_image("team/app", "docker", *docker_image_);
    push.push_image("team/app", "arm", *arm_image_);
    push.push_manifest("team/app", "index", *oci_index_);
    push.push_manifest("team/app", "list", *docker_list_);
  }
  static void TearDownTestSuite() {
    delete docker_list_;
    delete oci_index_;
    delete arm_image_;
    delete docker_image_;
    delete oci_image_;
    delete upstream_;
  }

  void SetUp() override {
    proxy_ = std::make_unique<layercache_instance>("upstreams:\n" +
                                                   upstream_yaml("local", upstream_->url(), true));
  }

  std::string proxy_url(std::string_view path) const { return proxy_->url() + std::string(path); }

  static registry_process* upstream_;
  static image* oci_image_;
  static image* docker_image_;
  static image* arm_image_;
  static blob* oci_index_;
  static blob* docker_list_;
  std::unique_ptr<layercache_instance> proxy_;
  http_client client_;
};

registry_process* ProxyTest::upstream_ = nullptr;
image* ProxyTest::oci_image_ = nullptr;
image* ProxyTest::docker_image_ = nullptr;
image* ProxyTest::arm_image_ = nullptr;
blob* ProxyTest::oci_index_ = nullptr;
blob* ProxyTest::docker_list_ = nullptr;

void expect_oci_error(const http_response& r, unsigned status, std::string_view code) {
  EXPECT_EQ(r.status, status);
  EXPECT_NE(r.body.find("\"code\":\"" + std::string(code) + "\""), std::string::npos) << r.body;
  EXPECT_EQ(r.header("Content-Type"), "application/json");
}

TEST_F(ProxyTest, BaseEndpoint) {
  auto r = client_.get(proxy_url("/v2/"));
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.header("Docker-Distribution-API-Version"), "registry/2.0");
  EXPECT_EQ(client_.head(proxy_url("/v2/")).status, 200u);
}

TEST_F(ProxyTest, ManifestsByTagAndDigestAreByteExact) {
  const std::vector<std::pair<std::string, const blob*>> cases = {
      {"oci", &oci_image_->manifest},
      {"docker", &docker_image_->manifest},
      {"index", oci_index_},
      {"list", docker_list_}};
  for (const auto& [tag, m] : cases) {
    for (const std::string& ref : std::vector<std::string>{tag, m->digest.str()}) {
      SCOPED_TRACE(ref);
      auto r = client_.get(proxy_url("/v2/team/app/manifests/" + ref), kAcceptAll);
      ASSERT_EQ(r.status, 200u) << r.body;
      EXPECT_EQ(r.body, m->data);
      EXPECT_EQ(r.header("Content-Type"), m->media_type);
      EXPECT_EQ(r.header("Docker-Content-Digest"), m->digest.str());
      EXPECT_EQ(r.header("Content-Length"), std::to_string(m->data.size()));

      auto h = client_.head(proxy_url("/v2/team/app/manifests/" + ref), kAcceptAll);
      EXPECT_EQ(h.status, 200u);
      EXPECT_EQ(h.header("Content-Type"), m->media_type);
      EXPECT_EQ(h.header("Docker-Content-Digest"), m->digest.str());
      EXPECT_EQ(h.header("Content-Length"), std::to_string(m->data.size()));
      EXPECT_TRUE(h.body.empty());
    }
  }
}

TEST_F(ProxyTest, ManifestWithoutAcceptGetsStoredType) {
  // No Accept from the client: the proxy asks for every type, so the registry does not
  // down-convert a schema 2 manifest to schema 1.
  auto r = client_.get(proxy_url("/v2/team/app/manifests/docker"));
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, docker_image_->manifest.data);
}

TEST_F(ProxyTest, SeveralAcceptHeadersAllCount) {
  // Go clients send one Accept header per media type; the index must not be refused because
  // its type was not the first one.
  auto r = client_.get(proxy_url("/v2/team/app/manifests/index"),
                       {{"Accept", std::string(media_type::docker_manifest)},
                        {"Accept", std::string(media_type::oci_manifest)},
                        {"Accept", std::string(media_type::oci_index)}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.body, oci_index_->data);
}

TEST_F(ProxyTest, BlobsWholeAndHead) {
  for (const auto* b : {&oci_image_->layers[1], &oci_image_->config, &docker_image_->layers[0]}) {
    auto r = client_.get(proxy_url("/v2/team/app/blobs/" + b->digest.str()));
    ASSERT_EQ(r.status, 200u);
    EXPECT_TRUE(r.body == b->data);
    EXPECT_EQ(r.header("Docker-Content-Digest"), b->digest.str());
    EXPECT_EQ(r.header("Accept-Ranges"), "bytes");
    EXPECT_EQ(r.header("ETag"), "\"" + b->digest.str() + "\"");
    EXPECT_FALSE(r.header("Content-Range").has_value());

    auto h = client_.head(proxy_url("/v2/team/app/blobs/" + b->digest.str()));
    EXPECT_EQ(h.status, 200u);
    EXPECT_EQ(h.header("Content-Length"), std::to_string(b->data.size()));
    EXPECT_TRUE(h.body.empty());
  }
}

TEST_F(ProxyTest, BlobRanges) {
  const auto& b = oci_image_->layers[1];
  const std::string url = proxy_url("/v2/team/app/blobs/" + b.digest.str());
  auto r = client_.get(url, {{"Range", "bytes=1000-1999"}});
  ASSERT_EQ(r.status, 206u);
  EXPECT_EQ(r.body, b.data.substr(1000, 1000));
  EXPECT_EQ(r.header("Content-Range"), "bytes 1000-1999/" + std::to_string(b.data.size()));

  auto open = client_.get(url, {{"Range", "bytes=" + std::to_string(b.data.size() - 10) + "-"}});
  ASSERT_EQ(open.status, 206u);
  EXPECT_EQ(open.body, b.data.substr(b.data.size() - 10));

  auto past = client_.get(url, {{"Range", "bytes=" + std::to_string(b.data.size() + 5) + "-"}});
  EXPECT_EQ(past.status, 416u);
}

TEST_F(ProxyTest, BlobRangesPastTheEndAre416) {
  // A first position at or past the end, however large (past 2^64 too), is unsatisfiable:
  // 416 with the size, never the whole blob or a 400. Both before the blob is in the store
  // (its size from the upstream) and once it is.
  auto ranges_past = [](const blob& b) {
    return std::vector<std::string>{"bytes=" + std::to_string(b.data.size()) + "-",
                                    "bytes=99999999999999999999999-",
                                    "bytes=99999999999999999999999-99999999999999999999999"};
  };
  auto expect_416 = [&](const blob& b) {
    for (const std::string& range : ranges_past(b)) {
      SCOPED_TRACE(range);
      auto r = client_.get(proxy_url("/v2/team/app/blobs/" + b.digest.str()), {{"Range", range}});
      EXPECT_EQ(r.status, 416u) << r.body.substr(0, 200);
      EXPECT_EQ(r.header("Content-Range"), "bytes */" + std::to_string(b.data.size()));
    }
  };
  const blob& uncached = oci_image_->layers[2];
  expect_416(uncached);

  const blob& cached = oci_image_->layers[0];
  ASSERT_EQ(client_.get(proxy_url("/v2/team/app/blobs/" + cached.digest.str())).status, 200u);
  expect_416(cached);
  // A satisfiable range among them is served alone.
  auto r = client_.get(proxy_url("/v2/team/app/blobs/" + cached.digest.str()),
                       {{"Range", "bytes=0-9,99999999999999999999999-"}});
  EXPECT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == cached.data.substr(0, 10));

  // Without the store the Range goes to the upstream and its 416 is passed on (distribution
  // sends Content-Range only when it could parse the numbers).
  layercache_instance plain("cache:\n  enabled: false\nupstreams:\n" +
                            upstream_yaml("local", upstream_->url(), true));
  for (const std::string& range : ranges_past(uncached)) {
    SCOPED_TRACE(range);
    auto relayed = client_.get(plain.url() + "/v2/team/app/blobs/" + uncached.digest.str(),
                               {{"Range", range}});
    EXPECT_EQ(relayed.status, 416u) << relayed.body.substr(0, 200);
  }
}

TEST_F(ProxyTest, BlobsPassStraightThroughWithCacheDisabled) {
  // The relay path (no store): whole blob, Range forwarded, HEAD, 404 passed on.
  layercache_instance plain("cache:\n  enabled: false\nupstreams:\n" +
                            upstream_yaml("local", upstream_->url(), true));
  const auto& b = oci_image_->layers[1];
  const std::string url = plain.url() + "/v2/team/app/blobs/" + b.digest.str();
  auto whole = client_.get(url);
  ASSERT_EQ(whole.status, 200u);
  EXPECT_TRUE(whole.body == b.data);
  EXPECT_EQ(whole.header("Docker-Content-Digest"), b.digest.str());
  auto part = client_.get(url, {{"Range", "bytes=10-19"}});
  EXPECT_EQ(part.status, 206u);
  EXPECT_EQ(part.body, b.data.substr(10, 10));
  auto head = client_.head(url);
  EXPECT_EQ(head.header("Content-Length"), std::to_string(b.data.size()));
  auto missing = client_.get(plain.url() + "/v2/team/app/blobs/sha256:" + std::string(64, '0'));
  EXPECT_EQ(missing.status, 404u);
  EXPECT_NE(missing.body.find("BLOB_UNKNOWN"), std::string::npos) << missing.body;
}

TEST_F(ProxyTest, UnknownThingsPassThroughAs404) {
  const std::string missing = "sha256:" + std::string(64, '0');
  auto b = client_.get(proxy_url("/v2/team/app/blobs/" + missing));
  EXPECT_EQ(b.status, 404u);
  EXPECT_NE(b.body.find("BLOB_UNKNOWN"), std::string::npos) << b.body;
  auto m = client_.get(proxy_url("/v2/team/app/manifests/nope"), kAcceptAll);
  EXPECT_EQ(m.status, 404u);
  EXPECT_NE(m.body.find("MANIFEST_UNKNOWN"), std::string::npos) << m.body;
  auto n = client_.get(proxy_url("/v2/no/such/repo/manifests/x"), kAcceptAll);
  EXPECT_EQ(n.status, 404u);
}

TEST_F(ProxyTest, InvalidInputIsRefusedBeforeUpstream) {
  expect_oci_error(client_.get(proxy_url("/v2/Team/App/manifests/x")), 400, "NAME_INVALID");
  expect_oci_error(client_.get(proxy_url("/v2/team/app/blobs/sha256:1234")), 400, "DIGEST_INVALID");
  expect_oci_error(client_.get(proxy_url("/v2/team/../app/manifests/x")), 400, "NAME_INVALID");
  expect_oci_error(client_.get(proxy_url("/v2/team%2fapp/manifests/x")), 400, "NAME_INVALID");
  // A reference that is neither a tag nor a digest names no manifest (as distribution and the
  // OCI conformance suite have it); one with a ':' is a malformed digest.
  expect_oci_error(client_.get(proxy_url("/v2/team/app/manifests/.INVALID_MANIFEST_NAME")), 404,
                   "MANIFEST_UNKNOWN");
  EXPECT_EQ(client_.head(proxy_url("/v2/team/app/manifests/.INVALID_MANIFEST_NAME")).status, 404u);
  expect_oci_error(client_.get(proxy_url("/v2/team/app/manifests/sha256:xyz")), 400,
                   "DIGEST_INVALID");
}

TEST_F(ProxyTest, WritesAre405) {
  for (const char* method : {"PUT", "POST", "DELETE", "PATCH"}) {
    auto r = client_.request(method, proxy_url("/v2/team/app/manifests/oci"), {}, "{}");
    expect_oci_error(r, 405, "UNSUPPORTED");
  }
  auto up = client_.request("POST", proxy_url("/v2/team/app/blobs/uploads/"));
  expect_oci_error(up, 405, "UNSUPPORTED");
  // The manifest is still there, unchanged.
  EXPECT_EQ(client_.get(proxy_url("/v2/team/app/manifests/oci"), kAcceptAll).body,
            oci_image_->manifest.data);
}

TEST_F(ProxyTest, ManyRequestsOnOneConnectionAndInParallel) {
  // http_client opens one connection per request; run several threads at once to exercise
  // both workers and the upstream connection pool.
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      http_client c;
      for (int i = 0; i < 10; ++i) {
        auto r = c.get(proxy_url("/v2/team/app/blobs/" + oci_image_->layers[0].digest.str()));
        if (r.status == 200 && r.body == oci_image_->layers[0].data) ++good;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 40);
}

TEST_F(ProxyTest, TagsListPassesThrough) {
  auto r = client_.get(proxy_url("/v2/team/app/tags/list"));
  ASSERT_EQ(r.status, 200u);
  for (const char* tag : {"oci", "docker", "arm", "index", "list"}) {
    EXPECT_NE(r.body.find(std::string("\"") + tag + "\""), std::string::npos) << r.body;
  }
  // Paging parameters reach the upstream: the answer is the one the upstream gives directly
  // (distribution 2.8 ignores n; newer registries page and send a Link header).
  auto page = client_.get(proxy_url("/v2/team/app/tags/list?n=2"));
  auto direct = client_.get(upstream_->url() + "/v2/team/app/tags/list?n=2");
  ASSERT_EQ(page.status, 200u);
  EXPECT_EQ(page.body, direct.body);
  EXPECT_EQ(page.header("Link"), direct.header("Link"));
}

TEST_F(ProxyTest, ReferrersPassThrough) {
  // distribution 2.8 predates OCI 1.1 referrers: it answers 404, which is passed on as is.
  auto r = client_.get(proxy_url("/v2/team/app/referrers/" + oci_image_->manifest.digest.str()));
  EXPECT_EQ(r.status, 404u);
}

// Two upstreams: "a" (default) and "b". ns= picks by host, a path prefix by name.
TEST(ProxyRouting, NamespaceAndPathPrefix) {
  registry_process a;
  registry_process b;
  const auto img_a = make_image(image_format::oci, {10'000}, 10);
  const auto img_b = make_image(image_format::oci, {20'000}, 20);
  registry_pusher(a.url()).push_image("lib/x", "v1", img_a);
  registry_pusher(b.url()).push_image("lib/x", "v1", img_b);
  file_server bystander(std::filesystem::temp_directory_path());

  layercache_instance proxy("upstreams:\n" + upstream_yaml("a", a.url(), true) +
                            upstream_yaml("b", b.url(), false, "    aliases: [registry.b.test]\n"));
  http_client c;
  auto get = [&](const std::string& path) { return c.get(proxy.url() + path, kAcceptAll); };
  EXPECT_EQ(get("/v2/lib/x/manifests/v1").body, img_a.manifest.data);
  EXPECT_EQ(get("/v2/lib/x/manifests/v1?ns=" + a.host()).body, img_a.manifest.data);
  EXPECT_EQ(get("/v2/lib/x/manifests/v1?ns=" + b.host()).body, img_b.manifest.data);
  EXPECT_EQ(get("/v2/lib/x/manifests/v1?ns=registry.b.test").body, img_b.manifest.data);
  EXPECT_EQ(get("/v2/b/lib/x/manifests/v1").body, img_b.manifest.data);
  EXPECT_EQ(get("/v2/b/lib/x/blobs/" + img_b.layers[0].digest.str()).body, img_b.layers[0].data);

  // Not an open proxy: a namespace that is no configured upstream is refused and not dialled.
  for (const std::string& ns :
       std::vector<std::string>{"127.0.0.1:" + std::to_string(bystander.port()), "evil.example",
                                "169.254.169.254", "metadata.google.internal"}) {
    auto r = get("/v2/lib/x/manifests/v1?ns=" + ns);
    expect_oci_error(r, 403, "DENIED");
  }
  EXPECT_TRUE(bystander.requests().empty());
}

TEST(ProxyUpstreams, TlsUpstreamVerifiedWithConfiguredCa) {
  registry_process tls_registry(registry_options{.tls = true});
  const auto img = make_image(image_format::docker, {50'000, 60'000}, 30);
  registry_pusher(tls_registry.url(), tls_registry.ca_file()).push_image("sec/app", "v1", img);

  layercache_instance good("upstreams:\n" +
                           upstream_yaml("tls", tls_registry.url(), true,
                                         "    ca_file: " + tls_registry.ca_file() + "\n"));
  http_client c;
  auto m = c.get(good.url() + "/v2/sec/app/manifests/v1", kAcceptAll);
  ASSERT_EQ(m.status, 200u) << m.body;
  EXPECT_EQ(m.body, img.manifest.data);
  EXPECT_EQ(c.get(good.url() + "/v2/sec/app/blobs/" + img.layers[1].digest.str()).body,
            img.layers[1].data);

  // Without the CA the upstream's certificate is not trusted: 502, never a silent downgrade.
  layercache_instance untrusted("upstreams:\n" + upstream_yaml("tls", tls_registry.url(), true));
  auto bad = c.get(untrusted.url() + "/v2/sec/app/manifests/v1", kAcceptAll);
  expect_oci_error(bad, 502, "UNAVAILABLE");
}

TEST(ProxyUpstreams, BasicAuthUpstream) {
  registry_process locked(registry_options{.htpasswd = std::pair{"alice", "s3cret-pw"}});
  const auto img = make_image(image_format::oci, {40'000}, 40);
  registry_pusher(locked.url(), {}, std::pair{"alice", "s3cret-pw"}).push_image("p/q", "v1", img);

  temp_dir dir;
  const auto password_file = dir.path() / "password";
  write_file(password_file, "s3cret-pw\n", 0600);
  layercache_instance with_creds(
      "upstreams:\n" +
      upstream_yaml("locked", locked.url(), true,
                    "    auth:\n      type: basic\n      username: alice\n      password_file: " +
                        password_file.string() + "\n"));
  http_client c;
  auto m = c.get(with_creds.url() + "/v2/p/q/manifests/v1", kAcceptAll);
  ASSERT_EQ(m.status, 200u) << m.body;
  EXPECT_EQ(m.body, img.manifest.data);
  auto b = c.get(with_creds.url() + "/v2/p/q/blobs/" + img.layers[0].digest.str());
  EXPECT_EQ(b.body, img.layers[0].data);

  // Without credentials the upstream's 401 reaches the client, minus its login challenge.
  layercache_instance anonymous("upstreams:\n" + upstream_yaml("locked", locked.url(), true));
  auto denied = c.get(anonymous.url() + "/v2/p/q/manifests/v1", kAcceptAll);
  EXPECT_EQ(denied.status, 401u);
  EXPECT_FALSE(denied.header("WWW-Authenticate").has_value());
}

TEST(ProxyUpstreams, RedirectedBlobsFetchedWithoutCredentials) {
  temp_dir storage;
  file_server storage_host(storage.path());
  registry_process locked(registry_options{.htpasswd = std::pair{"bob", "pw-for-bob"},
                                           .redirect_base_url = storage_host.url(),
                                           .storage_dir = storage.path()});
  const auto img = make_image(image_format::oci, {2'000'000, 30'000}, 50);
  registry_pusher(locked.url(), {}, std::pair{"bob", "pw-for-bob"}).push_image("r/s", "v1", img);
  storage_host.clear_requests();

  temp_dir dir;
  const auto password_file = dir.path() / "password";
  write_file(password_file, "pw-for-bob", 0600);
  layercache_instance proxy(
      "upstreams:\n" +
      upstream_yaml("locked", locked.url(), true,
                    "    auth:\n      type: basic\n      username: bob\n      password_file: " +
                        password_file.string() + "\n"));
  http_client c;
  const auto& layer = img.layers[0];
  auto whole = c.get(proxy.url() + "/v2/r/s/blobs/" + layer.digest.str());
  ASSERT_EQ(whole.status, 200u) << whole.body;
  EXPECT_TRUE(whole.body == layer.data);
  EXPECT_EQ(whole.header("Docker-Content-Digest"), layer.digest.str());
  auto part =
      c.get(proxy.url() + "/v2/r/s/blobs/" + layer.digest.str(), {{"Range", "bytes=100-199"}});
  EXPECT_EQ(part.status, 206u);
  EXPECT_EQ(part.body, layer.data.substr(100, 100));

  const auto seen = storage_host.requests();
  ASSERT_GE(seen.size(), 2u);  // the redirects were followed to the storage host
  for (const auto& r : seen) {
    EXPECT_FALSE(r.header("Authorization").has_value()) << r.target;
  }
}

TEST(ProxyListener, ServesHttps) {
  registry_process upstream;
  const auto img = make_image(image_format::oci, {10'000}, 60);
  registry_pusher(upstream.url()).push_image("t/u", "v1", img);
  temp_dir dir;
  const auto certs = make_test_certificates(dir.path());
  layercache_instance proxy(
      "server:\n  threads: 1\n  listen:\n    - address: 127.0.0.1:0\n"
      "      tls:\n        cert_file: " +
      certs.server_cert + "\n        key_file: " + certs.server_key + "\nupstreams:\n" +
      upstream_yaml("up", upstream.url(), true));
  http_client c(certs.ca_cert);
  ASSERT_TRUE(proxy.url().starts_with("https://"));
  auto m = c.get(proxy.url() + "/v2/t/u/manifests/v1", kAcceptAll);
  ASSERT_EQ(m.status, 200u);
  EXPECT_EQ(m.body, img.manifest.data);
}

TEST(ProxyUpstreams, UnreachableUpstreamIs502) {
  const auto dead_port = free_port();
  layercache_instance proxy(
      "upstreams:\n" +
      upstream_yaml("dead", "http://127.0.0.1:" + std::to_string(dead_port), true));
  http_client c;
  auto r = c.get(proxy.url() + "/v2/a/b/manifests/v1", kAcceptAll);
  expect_oci_error(r, 502, "UNAVAILABLE");
}

// A tag resolved at the upstream opens warm_connections connections beside its own request:
// the blob reads that follow (here three at once) find them open and dial none.
TEST(ProxyUpstreams, ATagResolvedUpstreamWarmsConnectionsForTheBlobReads) {
  const image img = make_image(image_format::oci, {30'000, 20'000}, 9);
  http_stub upstream([&img](const stub_request& r) {
    stub_response a;
    const auto blob_of = [&](const blob& b) {
      return r.target == "/v2/w/app/blobs/" + b.digest.str();
    };
    if (r.target == "/v2/") return a;
    if (r.target == "/v2/w/app/manifests/v1") {
      a.headers = {{"Content-Type", img.manifest.media_type},
                   {"Docker-Content-Digest", img.manifest.digest.str()}};
      a.body = img.manifest.data;
      return a;
    }
    for (const blob* b : {&img.config, &img.layers[0], &img.layers[1]}) {
      if (!blob_of(*b)) continue;
      a.body = b->data;
      if (const auto range = r.header("Range")) {
        std::uint64_t first = 0, last = 0;
        if (std::sscanf(range->c_str(), "bytes=%lu-%lu", &first, &last) == 2 &&
            last < b->data.size()) {
          a.status = 206;
          a.body = b->data.substr(first, last - first + 1);
          a.headers.emplace_back("Content-Range", "bytes " + std::to_string(first) + "-" +
                                                      std::to_string(last) + "/" +
                                                      std::to_string(b->data.size()));
        }
      }
      return a;
    }
    a.status = 404;
    return a;
  });
  for (const unsigned warm : {3u, 0u}) {
    // One worker (one connection pool); no prefetch (its fills would take the connections).
    layercache_instance proxy(
        "server:\n  threads: 1\n  listen:\n    - address: 127.0.0.1:0\n"
        "prefetch:\n  enabled: false\nupstreams:\n" +
        upstream_yaml("up", upstream.url(), true) +
        "    warm_connections: " + std::to_string(warm) + "\n");
    const unsigned before = upstream.connections();
    http_client c;
    ASSERT_EQ(c.get(proxy.url() + "/v2/w/app/manifests/v1", kAcceptAll).status, 200u);
    // The manifest's own connection, and the warmed ones once they are open.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (upstream.connections() < before + 1 + warm &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // no more than that
    EXPECT_EQ(upstream.connections(), before + 1 + warm) << "warm_connections " << warm;
    if (warm == 0) continue;
    std::vector<std::thread> readers;
    std::vector<unsigned> status(3, 0);
    const std::vector<const blob*> blobs = {&img.config, &img.layers[0], &img.layers[1]};
    for (std::size_t i = 0; i < blobs.size(); ++i) {
      readers.emplace_back([&, i] {
        http_client own;
        const auto r = own.get(proxy.url() + "/v2/w/app/blobs/" + blobs[i]->digest.str());
        status[i] = r.body == blobs[i]->data ? r.status : 0;
      });
    }
    for (auto& t : readers) t.join();
    EXPECT_EQ(status, (std::vector<unsigned>{200, 200, 200}));
    EXPECT_EQ(upstream.connections(), before + 1 + warm)
        << "the blob reads dialled the upstream again";
  }
}

}  // namespace
}  // namespace layercache::testing
