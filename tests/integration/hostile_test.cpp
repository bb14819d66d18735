// Issue 25: a hostile upstream, or a web page in a browser on the node, must get nothing.
// Upstreams here are http_stubs that answer as an attacker would: redirects to layercache's
// own listeners and to internal addresses, token realms on other ports and hosts, challenges
// that differ per repository, bodies that trickle forever. The web page's requests are sent
// as a browser would send them (a foreign Host, a text/plain POST). docs/reliability.md,
// "Hostile upstream", has the table.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "oci/digest.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_connection.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kManifestType = "application/vnd.oci.image.manifest.v1+json";
const header_list kAccept = {{"Accept", std::string(kManifestType)}};

std::string manifest_body() {
  return R"({"schemaVersion":2,"mediaType":")" + std::string(kManifestType) +
         R"(","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
         "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" +
         R"(","size":2},"layers":[]})";
}

stub_response manifest_answer() {
  return {200, {{"Content-Type", std::string(kManifestType)}}, manifest_body(), {}};
}

stub_response not_found() {
  return {404, {{"Content-Type", "application/json"}}, R"({"errors":[]})", {}};
}

bool contains(std::string_view text, std::string_view what) {
  return text.find(what) != std::string_view::npos;
}

// A refused request: a 502 with an OCI body that names nothing of where it was sent.
void expect_refused_quietly(const http_response& r, std::uint16_t target_port) {
  EXPECT_EQ(r.status, 502u) << r.body;
  EXPECT_TRUE(contains(r.body, "\"errors\"")) << r.body;
  EXPECT_FALSE(contains(r.body, std::to_string(target_port))) << r.body;
  EXPECT_FALSE(contains(r.body, "127.0.0.1")) << r.body;
  EXPECT_FALSE(contains(r.body, "localhost")) << r.body;
  EXPECT_FALSE(contains(r.body, "169.254")) << r.body;
  EXPECT_FALSE(contains(r.body, "open_connections")) << r.body;  // /admin/stats
  EXPECT_FALSE(contains(r.body, "layercache_")) << r.body;       // /metrics
}

class HostileUpstreamTest : public ::testing::Test {
 protected:
  // One worker thread, so that what one request taught the upstream client is what the next
  // one finds; no prefetch and no background completion: upstream requests are the test's.
  std::unique_ptr<layercache_instance> proxy_for(
      const std::string& url, std::string_view upstream_extra = {}, std::string_view top_extra = {},
      std::string_view timeouts = "{connect: 2s, response: 5s, read: 5s, body: 1s}") {
    return std::make_unique<layercache_instance>(
        "server:\n  threads: 1\n  timeouts: {shutdown: 1s}\n  listen:\n"
        "    - address: 127.0.0.1:0\n" +
        std::string(top_extra) + "cache:\n  path: " + (dir_.path() / "store").string() +
        "\n  complete_partial: false\nprefetch:\n  enabled: false\nupstreams:\n" +
        upstream_yaml("up", url, true,
                      "    retry: {attempts: 1}\n    timeouts: " + std::string(timeouts) + "\n" +
                          std::string(upstream_extra)));
  }

  // Basic credentials for the upstream; `more` adds keys under `auth:`.
  std::string basic_auth_yaml(std::string_view more = {}) {
    const auto file = dir_.path() / "password";
    write_file(file, "hostile-secret\n", 0600);
    return "    auth:\n      type: basic\n      username: alice\n      password_file: " +
           file.string() + "\n" + std::string(more);
  }

  double refused_redirects(const layercache_instance& proxy) const {
    return proxy.metric("layercache_upstream_redirects_total", {{"outcome", "refused"}});
  }

  temp_dir dir_;
  http_client client_;
};

// The issue's reproduction: a manifest GET redirected to the admin listener returned the
// admin JSON (and stored it as the tag's manifest); a tag list's redirect returned /metrics.
// Manifests, tag lists and blob HEADs never follow a redirect (a redirected HEAD is asked again
// as a GET of the blob's first byte, which may follow one, but not there).
TEST_F(HostileUpstreamTest, ManifestTagListAndBlobHeadRedirectsAreRefused) {
  std::atomic<std::uint16_t> admin_port{0};
  http_stub upstream([&](const stub_request& r) -> stub_response {
    const std::string admin = "127.0.0.1:" + std::to_string(admin_port.load());
    if (contains(r.target, "/manifests/")) {
      return {302, {{"Location", "http://" + admin + "/admin/stats"}}, "", {}};
    }
    if (contains(r.target, "/tags/list"))
      return {307, {{"Location", "//" + admin + "/metrics"}}, "", {}};
    if (contains(r.target, "/blobs/")) {
      return {307, {{"Location", "http://" + admin + "/admin/stats"}}, "", {}};
    }
    return not_found();
  });
  auto proxy = proxy_for(upstream.url());
  admin_port = proxy->srv().admin_port();

  const auto m = client_.get(proxy->url() + "/v2/lib/app/manifests/v1", kAccept);
  expect_refused_quietly(m, admin_port);
  const auto t = client_.get(proxy->url() + "/v2/lib/app/tags/list");
  expect_refused_quietly(t, admin_port);
  const std::string blob = "sha256:" + std::string(64, 'a');
  const auto h = client_.request("HEAD", proxy->url() + "/v2/lib/app/blobs/" + blob);
  EXPECT_EQ(h.status, 502u);
  // The HEAD's redirect, and that of the GET of its first byte which then asks for the size
  // (a blob GET may follow a redirect, but not to layercache itself).
  EXPECT_EQ(refused_redirects(*proxy), 4);
  // Nothing was stored as the tag's manifest: the upstream is asked again.
  upstream.clear_requests();
  EXPECT_EQ(client_.get(proxy->url() + "/v2/lib/app/manifests/v1", kAccept).status, 502u);
  EXPECT_EQ(upstream.requests().size(), 1u);
}

// A blob GET may follow a redirect, but never to layercache itself: not to the operations
// listener (reached through a DNS name, `localhost`, which only the connect-time check of the
// resolved address catches), not to its own client listener.
TEST_F(HostileUpstreamTest, BlobRedirectsToLayercacheItselfAreRefused) {
  const std::string blob = random_bytes(300'000, 25);
  const std::string digest = oci::digest_of(blob, oci::digest_algorithm::sha256).str();
  std::atomic<std::uint16_t> admin_port{0};
  std::atomic<std::uint16_t> proxy_port{0};
  std::atomic<bool> to_admin{true};
  http_stub upstream([&](const stub_request& r) -> stub_response {
    if (!contains(r.target, "/blobs/")) return not_found();
    if (r.method == "HEAD") return {200, {}, blob, {}};
    const std::string location =
        to_admin ? "http://localhost:" + std::to_string(admin_port.load()) + "/admin/stats"
                 : "http://127.0.0.1:" + std::to_string(proxy_port.load()) + "/v2/";
    return {307, {{"Location", location}}, "", {}};
  });
  auto proxy = proxy_for(upstream.url());
  admin_port = proxy->srv().admin_port();
  proxy_port = proxy->port();
  const std::string url = proxy->url() + "/v2/lib/app/blobs/" + digest;

  auto r = client_.get(url, {{"Range", "bytes=0-999"}});
  expect_refused_quietly(r, admin_port);
  to_admin = false;
  r = client_.get(url, {{"Range", "bytes=0-999"}});
  expect_refused_quietly(r, proxy_port);
  EXPECT_EQ(refused_redirects(*proxy), 2);
}

// A blob redirect to a link-local (cloud metadata), private or reserved address, from an
// upstream on loopback, or to another scheme, is refused before anything is dialled; to a
// storage host on the upstream's own kind of address it is followed (the control).
TEST_F(HostileUpstreamTest, BlobRedirectsToOtherInternalAddressesAreNeverDialled) {
  const std::string blob = random_bytes(200'000, 26);
  const std::string digest = oci::digest_of(blob, oci::digest_algorithm::sha256).str();
  http_stub storage(
      [&](const stub_request& r) -> stub_response {
        if (contains(r.target, "/storage/")) return {200, {}, blob, {}};
        return not_found();
      },
      "127.0.0.2");
  std::mutex mutex;
  std::string location;
  http_stub upstream([&](const stub_request& r) -> stub_response {
    if (!contains(r.target, "/blobs/")) return not_found();
    if (r.method == "HEAD") return {200, {}, blob, {}};
    std::lock_guard lock(mutex);
    return {307, {{"Location", location}}, "", {}};
  });
  auto proxy = proxy_for(upstream.url());
  const std::string url = proxy->url() + "/v2/lib/app/blobs/" + digest;
  const std::vector<std::string> refused = {
      "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
      "http://10.0.0.1:8080/storage/x", "http://[fd00::1]/storage/x",
      "http://0.0.0.0:" + std::to_string(storage.port()) + "/storage/x",
      "ftp://127.0.0.2/storage/x"};
  for (const auto& where : refused) {
    {
      std::lock_guard lock(mutex);
      location = where;
    }
    const auto r = client_.get(url, {{"Range", "bytes=0-99"}});
    expect_refused_quietly(r, storage.port());
  }
  EXPECT_EQ(refused_redirects(*proxy), static_cast<double>(refused.size()));
  EXPECT_TRUE(storage.requests().empty());

  {
    std::lock_guard lock(mutex);
    location = storage.url() + "/storage/blob?sig=1";
  }
  const auto ok = client_.get(url, {{"Range", "bytes=0-99"}});
  ASSERT_EQ(ok.status, 206u) << ok.body;
  EXPECT_EQ(ok.body, blob.substr(0, 100));
  ASSERT_EQ(storage.requests().size(), 1u);
  EXPECT_FALSE(storage.requests()[0].header("Authorization").has_value());
}

// The issue: an upstream's `Bearer realm="http://<its host>:<other port>/token"` received the
// upstream's Basic credentials on that port. The port (and the scheme) is part of the check.
TEST_F(HostileUpstreamTest, RealmOnTheUpstreamsHostButAnotherPortGetsNoCredentials) {
  http_stub other_port([](const stub_request&) -> stub_response {
    return {200, {{"Content-Type", "application/json"}}, R"({"token":"t"})", {}};
  });
  const std::string realm = other_port.url() + "/token";
  http_stub upstream([&](const stub_request& r) -> stub_response {
    if (r.header("Authorization") == "Bearer t") return manifest_answer();
    return {401, {{"WWW-Authenticate", "Bearer realm=\"" + realm + "\",service=\"s\""}}, "", {}};
  });
  {
    auto proxy = proxy_for(upstream.url(), basic_auth_yaml());
    const auto r = client_.get(proxy->url() + "/v2/lib/app/manifests/v1", kAccept);
    EXPECT_EQ(r.status, 502u) << r.body;
    EXPECT_TRUE(other_port.requests().empty()) << "credentials went to another port";
  }
  // Control: listed with its port, the realm is used.
  auto proxy =
      proxy_for(upstream.url(), basic_auth_yaml("      realm_hosts: ['127.0.0.1:" +
                                                std::to_string(other_port.port()) + "']\n"));
  const auto r = client_.get(proxy->url() + "/v2/lib/app/manifests/v1", kAccept);
  EXPECT_EQ(r.status, 200u) << r.body;
  ASSERT_EQ(other_port.requests().size(), 1u);
  EXPECT_EQ(other_port.requests()[0].header("Authorization"),
            basic_auth_header("alice", "hostile-secret"));
}

// An upstream that serves its own token endpoints: /token-<n> answers "tok-<n>", and the
// repository lib/<n> is challenged with realm /token-<n> unless `realm_for` says otherwise.
struct token_upstream {
  std::mutex mutex;
  std::map<std::string, std::string> realm_for;  // repository → realm URL
  http_stub stub{[this](const stub_request& r) { return answer(r); }};

  stub_response answer(const stub_request& r) {
    if (r.target.starts_with("/token-")) {
      const std::string n = r.target.substr(7, r.target.find('?') - 7);
      return {200, {{"Content-Type", "application/json"}}, R"({"token":"tok-)" + n + R"("})", {}};
    }
    if (!r.target.starts_with("/v2/lib/")) return not_found();
    const std::string repo = r.target.substr(4, r.target.find("/manifests/") - 4);  // lib/<n>
    const std::string n = repo.substr(4);
    if (r.header("Authorization") == "Bearer tok-" + n) return manifest_answer();
    std::string realm;
    {
      std::lock_guard lock(mutex);
      auto it = realm_for.find(repo);
      realm = it != realm_for.end() ? it->second : stub.url() + "/token-" + n;
    }
    return {401,
            {{"WWW-Authenticate", "Bearer realm=\"" + realm +
                                      "\",service=\"s\",scope=\"repository:" + repo + ":pull\""}},
            "",
            {}};
  }
  // Requests for `path_prefix`, in order.
  std::vector<stub_request> requests_to(std::string_view path_prefix) const {
    std::vector<stub_request> out;
    for (auto& q : stub.requests()) {
      if (q.target.starts_with(path_prefix)) out.push_back(q);
    }
    return out;
  }
};

// The issue: after one repository's challenge, later scopes fetched tokens from that realm
// (with the credentials) before the upstream had challenged them. A challenge is per
// (upstream, repository scope): another repository starts without credentials and learns its
// own.
TEST_F(HostileUpstreamTest, AChallengeIsPerRepositoryScope) {
  token_upstream upstream;
  auto proxy = proxy_for(upstream.stub.url(), basic_auth_yaml());
  ASSERT_EQ(client_.get(proxy->url() + "/v2/lib/one/manifests/v1", kAccept).status, 200u);
  ASSERT_EQ(client_.get(proxy->url() + "/v2/lib/two/manifests/v1", kAccept).status, 200u);

  const auto two = upstream.requests_to("/v2/lib/two/");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_FALSE(two[0].header("Authorization").has_value())
      << "lib/two was sent a token before its own challenge";
  EXPECT_EQ(two[1].header("Authorization"), "Bearer tok-two");
  EXPECT_EQ(upstream.requests_to("/token-one").size(), 1u);
  EXPECT_EQ(upstream.requests_to("/token-two").size(), 1u);
  // lib/one's challenge is still known for lib/one: its token goes along at once.
  upstream.stub.clear_requests();
  ASSERT_EQ(client_.get(proxy->url() + "/v2/lib/one/manifests/v2", kAccept).status, 200u);
  const auto one = upstream.requests_to("/v2/lib/one/");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].header("Authorization"), "Bearer tok-one");
}

// The issue: after a refused realm, about half of all requests to that upstream answered 502
// "token realm host … not allowed" until a restart. A refused realm fails only its request.
TEST_F(HostileUpstreamTest, ARefusedRealmFailsOnlyThatRequest) {
  http_stub foreign(
      [](const stub_request&) -> stub_response {
        return {200, {{"Content-Type", "application/json"}}, R"({"token":"tok-bad"})", {}};
      },
      "127.0.0.2");
  token_upstream upstream;
  {
    std::lock_guard lock(upstream.mutex);
    upstream.realm_for["lib/bad"] = foreign.url() + "/token";
  }
  auto proxy = proxy_for(upstream.stub.url(), basic_auth_yaml());

  auto r = client_.get(proxy->url() + "/v2/lib/bad/manifests/v1", kAccept);
  EXPECT_EQ(r.status, 502u) << r.body;
  EXPECT_TRUE(foreign.requests().empty());
  r = client_.get(proxy->url() + "/v2/lib/good/manifests/v1", kAccept);
  EXPECT_EQ(r.status, 200u) << r.body;
  // The upstream mends its challenge: the same repository works at once, no restart.
  {
    std::lock_guard lock(upstream.mutex);
    upstream.realm_for.clear();
  }
  r = client_.get(proxy->url() + "/v2/lib/bad/manifests/v1", kAccept);
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_TRUE(foreign.requests().empty());
}

// Token fetches never follow a redirect (a token endpoint's 302 is a failed fetch).
TEST_F(HostileUpstreamTest, ATokenEndpointsRedirectIsNotFollowed) {
  http_stub collector([](const stub_request&) -> stub_response {
    return {200, {{"Content-Type", "application/json"}}, R"({"token":"tok-x"})", {}};
  });
  token_upstream upstream;
  const std::string collector_url = collector.url();
  // The upstream's realm is on its own origin, and answers the token request with a 302.
  http_stub front([&](const stub_request& r) -> stub_response {
    if (r.target.starts_with("/redirect")) {
      return {302, {{"Location", collector_url + "/token"}}, "", {}};
    }
    return upstream.answer(r);
  });
  {
    std::lock_guard lock(upstream.mutex);
    upstream.realm_for["lib/x"] = front.url() + "/redirect";
  }
  auto proxy = proxy_for(front.url(), basic_auth_yaml());
  const auto r = client_.get(proxy->url() + "/v2/lib/x/manifests/v1", kAccept);
  EXPECT_EQ(r.status, 502u) << r.body;
  EXPECT_TRUE(collector.requests().empty());
  EXPECT_EQ(front.requests().size(), 2u);  // the manifest's 401, the token request
}

// An https upstream's blobs never travel in clear: its redirect to an http URL is refused
// (the control: a relative one, on its own https origin, is followed).
TEST_F(HostileUpstreamTest, AnHttpsUpstreamsRedirectToHttpIsRefused) {
  temp_dir certs;
  const auto tls = make_test_certificates(certs.path());
  const std::string blob = random_bytes(100'000, 27);
  const std::string digest = oci::digest_of(blob, oci::digest_algorithm::sha256).str();
  http_stub plain([&](const stub_request&) -> stub_response { return {200, {}, blob, {}}; });
  const std::string plain_url = plain.url();
  std::atomic<bool> downgrade{true};
  http_stub upstream(
      [&](const stub_request& r) -> stub_response {
        if (r.target.starts_with("/storage/")) return {200, {}, blob, {}};
        if (!contains(r.target, "/blobs/")) return not_found();
        if (r.method == "HEAD") return {200, {}, blob, {}};
        return {307,
                {{"Location", downgrade ? plain_url + "/storage/b?sig=1" : "/storage/b?sig=1"}},
                "",
                {}};
      },
      "127.0.0.1", stub_tls{tls.server_cert, tls.server_key});
  auto proxy = proxy_for(upstream.url(), "    ca_file: " + tls.ca_cert + "\n");
  const std::string url = proxy->url() + "/v2/lib/app/blobs/" + digest;
  auto r = client_.get(url, {{"Range", "bytes=0-99"}});
  expect_refused_quietly(r, plain.port());
  EXPECT_TRUE(plain.requests().empty()) << "a blob of an https upstream was fetched over http";
  EXPECT_EQ(refused_redirects(*proxy), 1);
  downgrade = false;
  r = client_.get(url, {{"Range", "bytes=0-99"}});
  ASSERT_EQ(r.status, 206u) << r.body;
  EXPECT_EQ(r.body, blob.substr(0, 100));
}

// The issue: an https upstream's `Bearer realm="http://…"` received its Basic credentials in
// clear. Even on a listed host:port, an https upstream's realm must be https.
TEST_F(HostileUpstreamTest, AnHttpsUpstreamsHttpRealmGetsNoCredentials) {
  temp_dir certs;
  const auto tls = make_test_certificates(certs.path());
  http_stub plain([](const stub_request&) -> stub_response {
    return {200, {{"Content-Type", "application/json"}}, R"({"token":"t"})", {}};
  });
  const std::string realm = plain.url() + "/token";
  http_stub upstream(
      [&](const stub_request& r) -> stub_response {
        if (r.header("Authorization") == "Bearer t") return manifest_answer();
        return {
            401, {{"WWW-Authenticate", "Bearer realm=\"" + realm + "\",service=\"s\""}}, "", {}};
      },
      "127.0.0.1", stub_tls{tls.server_cert, tls.server_key});
  auto proxy =
      proxy_for(upstream.url(), "    ca_file: " + tls.ca_cert + "\n" +
                                    basic_auth_yaml("      realm_hosts: ['127.0.0.1:" +
                                                    std::to_string(plain.port()) + "']\n"));
  const auto r = client_.get(proxy->url() + "/v2/lib/app/manifests/v1", kAccept);
  EXPECT_EQ(r.status, 502u) << r.body;
  EXPECT_TRUE(plain.requests().empty()) << "credentials went to an http realm";
}

// The issue: `timeouts.read` is per pause, so a manifest body that trickles a byte at a time
// never ended. `timeouts.body` bounds the whole body.
TEST_F(HostileUpstreamTest, AManifestThatTricklesForeverFailsAtItsBodyDeadline) {
  http_stub upstream([](const stub_request& r) -> stub_response {
    if (!contains(r.target, "/manifests/")) return not_found();
    stub_response s = manifest_answer();
    s.body.append(100'000, ' ');  // whitespace after the JSON: 100 s at a byte per ms
    s.trickle = 1ms;
    return s;
  });
  auto proxy = proxy_for(upstream.url());
  const auto r =
      client_.request("GET", proxy->url() + "/v2/lib/app/manifests/v1", kAccept, {}, 60s);
  EXPECT_TRUE(r.status == 502u || r.status == 504u) << r.status << " " << r.body;
  EXPECT_TRUE(contains(r.body, "\"errors\"")) << r.body;
}

// The same for a token answer.
TEST_F(HostileUpstreamTest, ATokenAnswerThatTricklesFailsAtItsBodyDeadline) {
  token_upstream tokens;
  http_stub front([&](const stub_request& r) -> stub_response {
    if (r.target.starts_with("/token-")) {
      stub_response s = tokens.answer(r);
      s.body.append(100'000, ' ');
      s.trickle = 1ms;
      return s;
    }
    return tokens.answer(r);
  });
  {
    std::lock_guard lock(tokens.mutex);
    tokens.realm_for["lib/app"] = front.url() + "/token-app";
  }
  auto proxy = proxy_for(front.url(), basic_auth_yaml());
  const auto r =
      client_.request("GET", proxy->url() + "/v2/lib/app/manifests/v1", kAccept, {}, 60s);
  EXPECT_EQ(r.status, 502u) << r.body;
}

// A body that trickles past every deadline a shutdown waits for: the workers are stopped with
// that upstream read still in flight, and its frame is destroyed with the worker's io_context
// — which used to touch the metrics registry, already destroyed (a crash at exit).
TEST_F(HostileUpstreamTest, AShutdownWithAnUpstreamReadStillInFlightIsClean) {
  std::promise<void> asked;
  std::once_flag once;
  http_stub upstream([&](const stub_request& r) -> stub_response {
    if (!contains(r.target, "/manifests/")) return not_found();
    std::call_once(once, [&] { asked.set_value(); });
    stub_response s = manifest_answer();
    s.body.append(1'000'000, ' ');
    s.trickle = 1ms;
    return s;
  });
  auto proxy = proxy_for(upstream.url(), {}, {}, "{read: 10s, body: 1h}");
  const std::string url = proxy->url() + "/v2/lib/app/manifests/v1";
  std::thread client([&] {
    http_client c;
    try {
      (void)c.request("GET", url, kAccept, {}, 60s);
    } catch (const std::exception&) {
      // The connection is closed under it: what a shutdown does.
    }
  });
  asked.get_future().wait();
  proxy.reset();  // stop: the shutdown deadline passes with the read in flight
  client.join();
}

// A web page on the node: DNS rebinding (its own name, resolved to 127.0.0.1, in Host) and a
// simple cross-site POST (text/plain or a form, no preflight) reach the operations listener.
// Both are refused before anything is done.
TEST_F(HostileUpstreamTest, AdminRefusesRebindingHostsAndSimpleCrossSiteRequests) {
  http_stub upstream([](const stub_request&) { return not_found(); });
  auto proxy = proxy_for(upstream.url());
  const std::string admin = proxy->admin_url();
  const std::string own_host = admin.substr(7);  // 127.0.0.1:PORT
  const std::string preload = R"({"reference":"lib/app:v1"})";

  auto r = client_.request("POST", admin + "/admin/preload",
                           {{"Host", "rebind.attacker.example:" + own_host.substr(10)},
                            {"Origin", "http://rebind.attacker.example"},
                            {"Content-Type", "application/json"}},
                           preload);
  EXPECT_EQ(r.status, 403u) << r.body;
  r = client_.request("GET", admin + "/metrics", {{"Host", "rebind.attacker.example"}});
  EXPECT_EQ(r.status, 403u) << r.body;
  EXPECT_FALSE(contains(r.body, "layercache_"));
  for (const std::string type :
       {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"}) {
    r = client_.request("POST", admin + "/admin/preload",
                        {{"Origin", "http://attacker.example"}, {"Content-Type", type}}, preload);
    EXPECT_EQ(r.status, 415u) << type << ": " << r.body;
  }
  r = client_.request("DELETE", admin + "/admin/blobs");
  EXPECT_EQ(r.status, 415u) << r.body;
  EXPECT_TRUE(upstream.requests().empty()) << "a refused preload reached the upstream";

  // What layercachectl and Prometheus send still works.
  EXPECT_EQ(client_.get(admin + "/metrics").status, 200u);
  EXPECT_EQ(client_.get(admin + "/healthz", {{"Host", "localhost:" + own_host.substr(10)}}).status,
            200u);
  r = client_.request("DELETE", admin + "/admin/blobs/not-a-digest",
                      {{"Content-Type", "application/json; charset=utf-8"}});
  EXPECT_EQ(r.status, 400u) << r.body;
}

// With an admin token, the token is what makes a state-changing call legitimate.
TEST_F(HostileUpstreamTest, AdminTokenStandsInForTheJsonContentType) {
  http_stub upstream([](const stub_request&) { return not_found(); });
  write_file(dir_.path() / "admin-token", "admin-secret\n", 0600);
  auto proxy = proxy_for(upstream.url(), {},
                         "admin:\n  address: 127.0.0.1:0\n  token_file: " +
                             (dir_.path() / "admin-token").string() + "\n");
  const std::string admin = proxy->admin_url();
  auto r = client_.request("DELETE", admin + "/admin/blobs/not-a-digest",
                           {{"Authorization", "Bearer admin-secret"}});
  EXPECT_EQ(r.status, 400u) << r.body;
  r = client_.request("DELETE", admin + "/admin/blobs/not-a-digest",
                      {{"Content-Type", "application/json"}});
  EXPECT_EQ(r.status, 401u) << r.body;
}

// The issue: 1,100 idle admin connections exhausted the descriptors. They are capped.
TEST_F(HostileUpstreamTest, AdminConnectionsAreCapped) {
  http_stub upstream([](const stub_request&) { return not_found(); });
  auto proxy =
      proxy_for(upstream.url(), {}, "admin:\n  address: 127.0.0.1:0\n  max_connections: 2\n");
  const auto port = proxy->srv().admin_port();
  raw_connection first(port);
  raw_connection second(port);
  raw_connection third(port);  // accepted after the two others, and closed at once
  const std::string healthz = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  (void)third.send(healthz);
  EXPECT_TRUE(third.closed_by_server(10s));
  EXPECT_EQ(status_of(third.read(4096, 100ms)), 0u);
  // The two within the cap are served.
  ASSERT_TRUE(first.send(healthz));
  EXPECT_EQ(status_of(first.read(12, 10s)), 200u);
}

// At start, the descriptor limit is raised toward the hard limit so that max_connections fit.
TEST_F(HostileUpstreamTest, DescriptorLimitIsRaisedForMaxConnections) {
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  http_stub upstream([](const stub_request&) { return not_found(); });
  auto proxy = proxy_for(upstream.url(), {},
                         "");  // server.max_connections is the default, 4096
  rlimit after{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &after), 0);
  const std::uint64_t wanted = std::min<std::uint64_t>(before.rlim_max, 2 * 4096 + 64 + 1024);
  EXPECT_GE(after.rlim_cur, wanted);
}

// `Transfer-Encoding: xchunked` (a coding nobody knows) was answered, and the bytes after the
// header read as a second request (smuggling). RFC 9112: 400 and close.
TEST_F(HostileUpstreamTest, UnknownTransferEncodingIs400AndClose) {
  http_stub upstream([](const stub_request&) { return not_found(); });
  auto proxy = proxy_for(upstream.url());
  const std::string smuggled =
      "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: xchunked\r\n\r\n"
      "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (const auto port : {proxy->port(), proxy->srv().admin_port()}) {
    raw_connection c(port);
    ASSERT_TRUE(c.send(port == proxy->port()
                           ? smuggled
                           : "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: "
                             "xchunked\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    const std::string answer = c.read(64 * 1024, 10s);
    EXPECT_EQ(status_of(answer), 400u) << answer;
    EXPECT_EQ(answer.find("HTTP/1.1", 1), std::string::npos) << "a second response: " << answer;
    EXPECT_TRUE(c.closed_by_server(10s));
  }
}

}  // namespace
}  // namespace layercache::testing
