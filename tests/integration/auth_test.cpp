// Upstream credentials end to end: a real docker-registry with `auth: token` and a token issuer
// of ours, a fake GCE metadata server, docker config.json files and credential helpers, and
// upstreams that try to lure credentials elsewhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "log/log.hpp"
#include "tests/support/file_server.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"
#include "tests/support/token_issuer.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

const header_list kAcceptAll = {{"Accept", std::string(media_type::accept_all_manifests)}};
constexpr std::string_view kUser = "layercache";
constexpr std::string_view kPassword = "lc-secret-pw";

bool has_oci_error(const http_response& r) {
  return r.body.find("\"errors\"") != std::string::npos &&
         r.header("Content-Type") == "application/json";
}

std::size_t count_scope(const std::vector<token_request>& seen, std::string_view scope) {
  return static_cast<std::size_t>(std::count_if(seen.begin(), seen.end(), [&](const auto& r) {
    return std::find(r.scopes.begin(), r.scopes.end(), scope) != r.scopes.end();
  }));
}

// The issuer's realm host:port listed for an upstream's credentials: a realm on the
// registry's host but another port is refused unless listed (issue 25).
std::string realm_hosts_of(const token_issuer& issuer) {
  return "      realm_hosts: ['" + issuer.realm_host() + "']\n";
}

// One token issuer and one `auth: token` registry seeded through it, shared by this file.
class TokenAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    issuer_ = new token_issuer(token_issuer_options{
        .users = {{"pusher", "push-pw"}, {std::string(kUser), std::string(kPassword)}},
        .refresh_tokens = {{"identity-token-1", "layercache-refresh"}}});
    registry_ = new registry_process(registry_options{
        .token_auth = registry_options::token_auth_options{
            issuer_->realm(), issuer_->service(), issuer_->issuer(), issuer_->cert_file()}});
    app_ = new image(make_image(image_format::oci, {300'000, 40'000, 5'000}, 71));
    other_ = new image(make_image(image_format::docker, {20'000}, 72));
    registry_pusher push(registry_->url(), {}, std::pair{"pusher", "push-pw"});
    push.push_image("team/app", "v1", *app_);
    push.push_image("team/other", "v1", *other_);
  }
  static void TearDownTestSuite() {
    delete other_;
    delete app_;
    delete registry_;
    delete issuer_;
  }

  void SetUp() override {
    issuer_->set_expires_in(300s);
    issuer_->set_failure(0);
    issuer_->set_delay(0ms);
    issuer_->clear_requests();
    password_file_ = dir_.path() / "password";
    write_file(password_file_, std::string(kPassword) + "\n", 0600);
  }

  std::string basic_auth_yaml(std::string_view password_file) const {
    return "    auth:\n      type: basic\n      username: " + std::string(kUser) +
           "\n      password_file: " + std::string(password_file) + "\n" + realm_hosts_of(*issuer_);
  }

  std::unique_ptr<layercache_instance> proxy_with(std::string_view auth_yaml,
                                                  std::string_view extra = {}) const {
    // No eager prefetch: token fetches are counted per client request.
    std::string auth =
        auth_yaml.empty() ? "    auth:\n      type: anonymous\n" : std::string(auth_yaml);
    if (auth.find("realm_hosts") == std::string::npos) auth += realm_hosts_of(*issuer_);
    return std::make_unique<layercache_instance>(
        "prefetch:\n  eager_layers: never\nupstreams:\n" +
        upstream_yaml("reg", registry_->url(), true, auth + std::string(extra)));
  }

  // Pulls team/app:v1 (manifest by tag, then every blob) and checks the bytes.
  static void pull_app(http_client& c, const layercache_instance& proxy) {
    auto m = c.get(proxy.url() + "/v2/team/app/manifests/v1", kAcceptAll);
    ASSERT_EQ(m.status, 200u) << m.body;
    EXPECT_EQ(m.body, app_->manifest.data);
    for (const auto* b : {&app_->config, &app_->layers[0], &app_->layers[1], &app_->layers[2]}) {
      auto r = c.get(proxy.url() + "/v2/team/app/blobs/" + b->digest.str());
      ASSERT_EQ(r.status, 200u) << r.body;
      EXPECT_TRUE(r.body == b->data);
    }
  }

  static token_issuer* issuer_;
  static registry_process* registry_;
  static image* app_;
  static image* other_;
  temp_dir dir_;
  std::filesystem::path password_file_;
  http_client client_;
};

token_issuer* TokenAuthTest::issuer_ = nullptr;
registry_process* TokenAuthTest::registry_ = nullptr;
image* TokenAuthTest::app_ = nullptr;
image* TokenAuthTest::other_ = nullptr;

TEST_F(TokenAuthTest, RegistryRefusesRequestsWithoutToken) {
  // The fixture is what it claims: no token, no image.
  auto r = client_.get(registry_->url() + "/v2/team/app/manifests/v1", kAcceptAll);
  EXPECT_EQ(r.status, 401u);
  auto anonymous = proxy_with("");
  auto through = client_.get(anonymous->url() + "/v2/team/app/manifests/v1", kAcceptAll);
  EXPECT_EQ(through.status, 401u) << through.body;
  EXPECT_TRUE(has_oci_error(through)) << through.body;
}

TEST_F(TokenAuthTest, PullsWithPerScopeTokensAndBasicCredentials) {
  auto proxy = proxy_with(basic_auth_yaml(password_file_.string()));
  pull_app(client_, *proxy);
  auto other = client_.get(proxy->url() + "/v2/team/other/manifests/v1", kAcceptAll);
  ASSERT_EQ(other.status, 200u) << other.body;
  EXPECT_EQ(other.body, other_->manifest.data);

  const auto seen = issuer_->requests();
  // One token per repository scope, reused for every request of that repository.
  EXPECT_EQ(count_scope(seen, "repository:team/app:pull"), 1u);
  EXPECT_EQ(count_scope(seen, "repository:team/other:pull"), 1u);
  ASSERT_EQ(seen.size(), 2u);
  for (const auto& r : seen) {
    EXPECT_EQ(r.method, "GET");
    EXPECT_EQ(r.service, issuer_->service());
    EXPECT_EQ(r.user, std::string(kUser));
    EXPECT_EQ(r.authorization, basic_auth_header(kUser, kPassword));
    EXPECT_EQ(r.status, 200u);
  }
}

TEST_F(TokenAuthTest, ExpiredTokenIsFetchedAgain) {
  issuer_->set_expires_in(2s);
  auto proxy = proxy_with(basic_auth_yaml(password_file_.string()));
  auto first = client_.get(proxy->url() + "/v2/team/other/manifests/v1", kAcceptAll);
  ASSERT_EQ(first.status, 200u) << first.body;
  ASSERT_EQ(count_scope(issuer_->requests(), "repository:team/other:pull"), 1u);

  std::this_thread::sleep_for(2500ms);  // past the token's expiry (what is under test)
  auto digest =
      client_.get(proxy->url() + "/v2/team/other/blobs/" + other_->layers[0].digest.str());
  ASSERT_EQ(digest.status, 200u) << digest.body;
  EXPECT_TRUE(digest.body == other_->layers[0].data);
  EXPECT_EQ(count_scope(issuer_->requests(), "repository:team/other:pull"), 2u);
}

TEST_F(TokenAuthTest, ConcurrentColdRequestsShareOneTokenFetch) {
  // The issuer answers slowly, so every request arrives while the one fetch is in flight.
  issuer_->set_delay(400ms);
  auto proxy = proxy_with(basic_auth_yaml(password_file_.string()));
  const std::vector<std::string> paths = {
      "/v2/team/app/manifests/v1",
      "/v2/team/app/manifests/" + app_->manifest.digest.str(),
      "/v2/team/app/blobs/" + app_->config.digest.str(),
      "/v2/team/app/blobs/" + app_->layers[0].digest.str(),
      "/v2/team/app/blobs/" + app_->layers[1].digest.str(),
      "/v2/team/app/blobs/" + app_->layers[2].digest.str(),
  };
  constexpr int kClients = 12;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      http_client c;
      const auto& path = paths[static_cast<std::size_t>(i) % paths.size()];
      const bool head = i >= static_cast<int>(paths.size());
      auto r =
          head ? c.head(proxy->url() + path, kAcceptAll) : c.get(proxy->url() + path, kAcceptAll);
      if (r.status == 200) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kClients);
  EXPECT_EQ(count_scope(issuer_->requests(), "repository:team/app:pull"), 1u);
}

TEST_F(TokenAuthTest, TokenEndpointFailuresAreOciErrorsNotHangs) {
  auto proxy = proxy_with(basic_auth_yaml(password_file_.string()),
                          "    timeouts:\n      connect: 2s\n      response: 1s\n      read: 2s\n");
  const std::string url = proxy->url() + "/v2/team/app/manifests/v1";

  issuer_->set_failure(503);
  auto down = client_.get(url, kAcceptAll);
  EXPECT_EQ(down.status, 502u) << down.body;
  EXPECT_TRUE(has_oci_error(down)) << down.body;

  issuer_->set_failure(403);
  auto denied = client_.get(url, kAcceptAll);
  EXPECT_EQ(denied.status, 401u) << denied.body;
  EXPECT_TRUE(has_oci_error(denied)) << denied.body;

  issuer_->set_failure(0);
  issuer_->set_delay(5s);  // longer than the upstream's response timeout
  auto hung = client_.request("GET", url, kAcceptAll, {}, 20s);
  EXPECT_EQ(hung.status, 502u) << hung.body;
  EXPECT_TRUE(has_oci_error(hung)) << hung.body;

  issuer_->set_delay(0ms);
  auto recovered = client_.get(url, kAcceptAll);
  EXPECT_EQ(recovered.status, 200u) << recovered.body;
}

TEST_F(TokenAuthTest, WrongPasswordIsUnauthorized) {
  write_file(password_file_, "not-the-password\n", 0600);
  auto proxy = proxy_with(basic_auth_yaml(password_file_.string()));
  auto r = client_.get(proxy->url() + "/v2/team/app/manifests/v1", kAcceptAll);
  EXPECT_EQ(r.status, 401u) << r.body;
  EXPECT_TRUE(has_oci_error(r));
  EXPECT_FALSE(r.header("WWW-Authenticate").has_value());
}

TEST_F(TokenAuthTest, RedirectTargetNeverSeesTheToken) {
  temp_dir storage;
  file_server storage_host(storage.path());
  registry_process redirecting(registry_options{
      .redirect_base_url = storage_host.url(),
      .storage_dir = storage.path(),
      .token_auth = registry_options::token_auth_options{issuer_->realm(), issuer_->service(),
                                                         issuer_->issuer(), issuer_->cert_file()}});
  const auto img = make_image(image_format::oci, {500'000}, 73);
  registry_pusher(redirecting.url(), {}, std::pair{"pusher", "push-pw"})
      .push_image("team/redirected", "v1", img);
  storage_host.clear_requests();
  issuer_->clear_requests();

  layercache_instance proxy(
      "upstreams:\n" +
      upstream_yaml("reg", redirecting.url(), true, basic_auth_yaml(password_file_.string())));
  auto r = client_.get(proxy.url() + "/v2/team/redirected/blobs/" + img.layers[0].digest.str());
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_TRUE(r.body == img.layers[0].data);
  EXPECT_EQ(count_scope(issuer_->requests(), "repository:team/redirected:pull"), 1u);
  const auto seen = storage_host.requests();
  ASSERT_GE(seen.size(), 1u);
  for (const auto& req : seen) EXPECT_FALSE(req.header("Authorization").has_value()) << req.target;
}

TEST_F(TokenAuthTest, DockerConfigAuthsEntry) {
  const auto config_json = dir_.path() / "config.json";
  write_file(config_json,
             R"({"auths":{")" + registry_->host() + R"(":{"auth":")" +
                 base64_encode(std::string(kUser) + ":" + std::string(kPassword)) + R"("}}})",
             0600);
  auto proxy = proxy_with(
      "    auth:\n      type: docker_config\n      docker_config: " + config_json.string() + "\n");
  pull_app(client_, *proxy);
  const auto seen = issuer_->requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].user, std::string(kUser));
}

TEST_F(TokenAuthTest, DockerConfigIdentityTokenUsesRefreshGrant) {
  const auto config_json = dir_.path() / "config.json";
  write_file(config_json,
             R"({"auths":{"http://)" + registry_->host() +
                 R"(":{"auth":"","identitytoken":"identity-token-1"}}})",
             0600);
  auto proxy = proxy_with(
      "    auth:\n      type: docker_config\n      docker_config: " + config_json.string() + "\n");
  auto r = client_.get(proxy->url() + "/v2/team/app/manifests/v1", kAcceptAll);
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto seen = issuer_->requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].grant_type, "refresh_token");
  EXPECT_EQ(seen[0].user, "layercache-refresh");
  EXPECT_EQ(seen[0].scopes, std::vector<std::string>{"repository:team/app:pull"});
  EXPECT_FALSE(seen[0].authorization.has_value());
}

TEST_F(TokenAuthTest, DockerConfigCredentialHelperAndReread) {
  const auto helpers = dir_.path() / "helpers";
  std::filesystem::create_directories(helpers);
  const auto input_log = dir_.path() / "helper-input";
  // A docker-credential helper: reads the server URL on stdin, answers with JSON.
  write_file(helpers / "docker-credential-fake",
             "#!/bin/sh\n"
             "[ \"$1\" = get ] || exit 3\n"
             "cat > '" +
                 input_log.string() +
                 "'\n"
                 "printf '{\"ServerURL\":\"x\",\"Username\":\"" +
                 std::string(kUser) + "\",\"Secret\":\"" + std::string(kPassword) + "\"}'\n",
             0700);
  const auto config_json = dir_.path() / "config.json";
  // First: a wrong password in `auths`; the helper is not configured yet.
  write_file(
      config_json,
      R"({"auths":{")" + registry_->host() + R"(":{"username":"layercache","password":"wrong"}}})",
      0600);
  auto proxy = proxy_with("    auth:\n      type: docker_config\n      docker_config: " +
                          config_json.string() + "\n      helper_dir: " + helpers.string() + "\n");
  auto refused = client_.get(proxy->url() + "/v2/team/app/manifests/v1", kAcceptAll);
  EXPECT_EQ(refused.status, 401u) << refused.body;
  EXPECT_FALSE(std::filesystem::exists(input_log));

  // The file changes (size too): the helper named by credHelpers is used from now on.
  write_file(config_json,
             R"({"auths":{")" + registry_->host() + R"(":{}},"credHelpers":{")" +
                 registry_->host() + R"(":"fake"}})",
             0600);
  auto ok = client_.get(proxy->url() + "/v2/team/app/manifests/v1", kAcceptAll);
  ASSERT_EQ(ok.status, 200u) << ok.body;
  EXPECT_EQ(ok.body, app_->manifest.data);
  EXPECT_EQ(read_file(input_log), registry_->host());
  EXPECT_EQ(issuer_->requests().back().user, std::string(kUser));
}

TEST_F(TokenAuthTest, CredentialHelperThatHangsIsKilled) {
  const auto helpers = dir_.path() / "helpers";
  std::filesystem::create_directories(helpers);
  write_file(helpers / "docker-credential-stuck", "#!/bin/sh\nexec sleep 30\n", 0700);
  const auto config_json = dir_.path() / "config.json";
  write_file(config_json, R"({"credsStore":"stuck"})", 0600);
  auto proxy = proxy_with(
      "    auth:\n      type: docker_config\n      docker_config: " + config_json.string() +
      "\n      helper_dir: " + helpers.string() + "\n      helper_timeout: 300ms\n");
  const auto started = std::chrono::steady_clock::now();
  auto r = client_.request("GET", proxy->url() + "/v2/team/app/manifests/v1", kAcceptAll, {}, 20s);
  EXPECT_EQ(r.status, 502u) << r.body;
  EXPECT_TRUE(has_oci_error(r));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 15s);
}

TEST_F(TokenAuthTest, SecretsStayOutOfTheLogAndExposedFilesAreFlagged) {
  // Readable by others: flagged at load. Debug logging: every request logged, no secret.
  write_file(password_file_, std::string(kPassword) + "\n", 0644);
  const auto config_json = dir_.path() / "config.json";
  write_file(config_json,
             R"({"auths":{")" + registry_->host() + R"(":{"auth":")" +
                 base64_encode(std::string(kUser) + ":" + std::string(kPassword)) + R"("}}})",
             0640);
  ::testing::internal::CaptureStderr();
  {
    layercache_instance proxy(
        "log:\n  level: debug\nupstreams:\n" +
        upstream_yaml("reg", registry_->url(), true, basic_auth_yaml(password_file_.string())) +
        upstream_yaml("dc", registry_->url(), false,
                      "    auth:\n      type: docker_config\n"
                      "      docker_config: " +
                          config_json.string() + "\n" + realm_hosts_of(*issuer_)));
    pull_app(client_, proxy);
    auto via_docker_config =
        client_.get(proxy.url() + "/v2/dc/team/other/manifests/v1", kAcceptAll);
    EXPECT_EQ(via_docker_config.status, 200u) << via_docker_config.body;
  }
  const std::string text = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(
      text.find("password file " + password_file_.string() + " holds a secret but has mode 0644"),
      std::string::npos)
      << text;
  EXPECT_NE(
      text.find("docker config " + config_json.string() + " holds a secret but has mode 0640"),
      std::string::npos)
      << text;
  EXPECT_EQ(text.find(std::string(kPassword)), std::string::npos) << text;
  EXPECT_EQ(text.find(base64_encode(std::string(kUser) + ":" + std::string(kPassword))),
            std::string::npos);
  EXPECT_EQ(text.find("Bearer "), std::string::npos);
  EXPECT_EQ(text.find("eyJ"), std::string::npos);  // no JWT
}

// A fake GCE metadata server: answers the token path only with `Metadata-Flavor: Google`.
class fake_metadata {
 public:
  explicit fake_metadata(std::string token, int expires_in)
      : token_(std::move(token)),
        expires_in_(expires_in),
        stub_([this](const stub_request& r) { return answer(r); }) {}

  [[nodiscard]] std::string url() const {
    return stub_.url() + "/computeMetadata/v1/instance/service-accounts/default/token";
  }
  [[nodiscard]] std::vector<stub_request> requests() const { return stub_.requests(); }

 private:
  stub_response answer(const stub_request& r) const {
    if (r.header("Metadata-Flavor") != "Google") return {403, {}, "missing Metadata-Flavor", {}};
    if (r.target != "/computeMetadata/v1/instance/service-accounts/default/token") {
      return {404, {}, "", {}};
    }
    return {200,
            {{"Content-Type", "application/json"}, {"Metadata-Flavor", "Google"}},
            R"({"access_token":")" + token_ + R"(","expires_in":)" + std::to_string(expires_in_) +
                R"(,"token_type":"Bearer"})",
            {}};
  }

  std::string token_;
  int expires_in_;
  http_stub stub_;
};

class GceMetadataTest : public TokenAuthTest {};

TEST_F(GceMetadataTest, AccessTokenIsBasicPasswordAtTheRealm) {
  // The issuer knows the access token as the password of user oauth2accesstoken.
  token_issuer gce_issuer(
      token_issuer_options{.users = {{"oauth2accesstoken", "ya29.test-token"}}});
  registry_process ar(registry_options{
      .token_auth = registry_options::token_auth_options{
          gce_issuer.realm(), gce_issuer.service(), gce_issuer.issuer(), gce_issuer.cert_file()}});
  const auto img = make_image(image_format::oci, {30'000}, 74);
  // Seed through the same issuer: the pusher logs in as oauth2accesstoken too.
  registry_pusher(ar.url(), {}, std::pair{"oauth2accesstoken", "ya29.test-token"})
      .push_image("proj/repo/img", "v1", img);
  gce_issuer.clear_requests();

  fake_metadata metadata("ya29.test-token", 3599);
  layercache_instance proxy(
      "upstreams:\n" + upstream_yaml("ar", ar.url(), true,
                                     "    auth:\n      type: gce_metadata\n      metadata_url: " +
                                         metadata.url() + "\n" + realm_hosts_of(gce_issuer)));
  auto m = client_.get(proxy.url() + "/v2/proj/repo/img/manifests/v1", kAcceptAll);
  ASSERT_EQ(m.status, 200u) << m.body;
  auto b = client_.get(proxy.url() + "/v2/proj/repo/img/blobs/" + img.layers[0].digest.str());
  ASSERT_EQ(b.status, 200u) << b.body;
  EXPECT_TRUE(b.body == img.layers[0].data);

  const auto asked = metadata.requests();
  ASSERT_EQ(asked.size(), 1u);  // fetched once, then reused
  EXPECT_EQ(asked[0].header("Metadata-Flavor"), "Google");
  const auto seen = gce_issuer.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].user, "oauth2accesstoken");
  EXPECT_EQ(seen[0].authorization, basic_auth_header("oauth2accesstoken", "ya29.test-token"));
}

TEST_F(GceMetadataTest, AccessTokenRefreshedBeforeItExpires) {
  token_issuer gce_issuer(
      token_issuer_options{.users = {{"oauth2accesstoken", "ya29.short"}}, .expires_in = 2s});
  registry_process ar(registry_options{
      .token_auth = registry_options::token_auth_options{
          gce_issuer.realm(), gce_issuer.service(), gce_issuer.issuer(), gce_issuer.cert_file()}});
  const auto img = make_image(image_format::oci, {10'000, 12'000}, 75);
  registry_pusher(ar.url(), {}, std::pair{"oauth2accesstoken", "ya29.short"})
      .push_image("p/r", "v1", img);

  fake_metadata metadata("ya29.short", 2);  // used for 1 s, then fetched again
  layercache_instance proxy(
      "upstreams:\n" + upstream_yaml("ar", ar.url(), true,
                                     "    auth:\n      type: gce_metadata\n      metadata_url: " +
                                         metadata.url() + "\n" + realm_hosts_of(gce_issuer)));
  auto first = client_.get(proxy.url() + "/v2/p/r/blobs/" + img.layers[0].digest.str());
  ASSERT_EQ(first.status, 200u) << first.body;
  ASSERT_EQ(metadata.requests().size(), 1u);
  std::this_thread::sleep_for(
      2200ms);  // past both the access token's and the registry token's life
  auto second = client_.get(proxy.url() + "/v2/p/r/blobs/" + img.layers[1].digest.str());
  ASSERT_EQ(second.status, 200u) << second.body;
  EXPECT_EQ(metadata.requests().size(), 2u);
}

TEST_F(GceMetadataTest, BearerDirectlyOnBasicChallenge) {
  const auto img = make_image(image_format::oci, {1'000}, 76);
  // An upstream that challenges with Basic and accepts only the access token as Bearer.
  http_stub upstream([&](const stub_request& r) -> stub_response {
    if (r.header("Authorization") != "Bearer ya29.direct") {
      return {401, {{"WWW-Authenticate", R"(Basic realm="stub")"}}, "", {}};
    }
    if (r.target == "/v2/x/y/manifests/v1") {
      return {200,
              {{"Content-Type", img.manifest.media_type},
               {"Docker-Content-Digest", img.manifest.digest.str()}},
              img.manifest.data,
              {}};
    }
    return {404, {}, "", {}};
  });
  fake_metadata metadata("ya29.direct", 3599);
  layercache_instance proxy(
      "upstreams:\n" + upstream_yaml("s", upstream.url(), true,
                                     "    auth:\n      type: gce_metadata\n      metadata_url: " +
                                         metadata.url() + "\n"));
  auto m = client_.get(proxy.url() + "/v2/x/y/manifests/v1", kAcceptAll);
  ASSERT_EQ(m.status, 200u) << m.body;
  EXPECT_EQ(m.body, img.manifest.data);
}

TEST_F(GceMetadataTest, MetadataServerDownIs502WithALogLine) {
  const auto dead = free_port();
  auto proxy =
      proxy_with("    auth:\n      type: gce_metadata\n      metadata_url: http://127.0.0.1:" +
                 std::to_string(dead) + "/computeMetadata/v1/token\n");
  ::testing::internal::CaptureStderr();
  auto r = client_.get(proxy->url() + "/v2/team/app/manifests/v1", kAcceptAll);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.status, 502u) << r.body;
  EXPECT_TRUE(has_oci_error(r)) << r.body;
  EXPECT_NE(log.find("no access token from the GCE metadata server"), std::string::npos) << log;
  EXPECT_TRUE(issuer_->requests().empty());  // nothing went to the realm without credentials
}

// An upstream whose challenge names a token realm on another host.
TEST(AuthSecurity, RealmOnForeignHostGetsNoCredentials) {
  http_stub foreign_realm(
      [](const stub_request&) -> stub_response {
        return {
            200, {{"Content-Type", "application/json"}}, R"({"token":"t","expires_in":300})", {}};
      },
      "127.0.0.2");
  const std::string realm = foreign_realm.url() + "/token";
  http_stub upstream([&](const stub_request& r) -> stub_response {
    if (r.header("Authorization") == "Bearer t") return {404, {}, R"({"errors":[]})", {}};
    return {401, {{"WWW-Authenticate", "Bearer realm=\"" + realm + "\",service=\"evil\""}}, "", {}};
  });
  temp_dir dir;
  const auto password_file = dir.path() / "password";
  write_file(password_file, "secret-pw", 0600);
  const std::string auth =
      "    auth:\n      type: basic\n      username: alice\n      password_file: " +
      password_file.string() + "\n";
  http_client c;
  {
    layercache_instance proxy("upstreams:\n" + upstream_yaml("m", upstream.url(), true, auth));
    auto r = c.get(proxy.url() + "/v2/a/b/manifests/v1", kAcceptAll);
    EXPECT_EQ(r.status, 502u) << r.body;
    EXPECT_TRUE(has_oci_error(r));
    EXPECT_TRUE(foreign_realm.requests().empty());
  }
  // Control: once the realm host is allowed, it does get the credentials.
  {
    layercache_instance proxy("upstreams:\n" +
                              upstream_yaml("m", upstream.url(), true,
                                            auth + "      realm_hosts: ['127.0.0.2:" +
                                                std::to_string(foreign_realm.port()) + "']\n"));
    auto r = c.get(proxy.url() + "/v2/a/b/manifests/v1", kAcceptAll);
    EXPECT_EQ(r.status, 404u) << r.body;
    const auto seen = foreign_realm.requests();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].header("Authorization"), basic_auth_header("alice", "secret-pw"));
  }
}

}  // namespace
}  // namespace layercache::testing
