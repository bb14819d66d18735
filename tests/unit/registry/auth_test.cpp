#include "registry/auth.hpp"

#include <gtest/gtest.h>

namespace layercache::registry {
namespace {

using namespace std::chrono_literals;

TEST(TokenCache, ExpiresEarly) {
  token_cache cache;
  const auto t0 = token_cache::clock::now();
  cache.store("hub", "repository:a:pull", "tok", 300s, t0);
  EXPECT_EQ(cache.find("hub", "repository:a:pull", t0 + 200s), "tok");
  EXPECT_EQ(cache.find("hub", "repository:b:pull", t0), std::nullopt);
  EXPECT_EQ(cache.find("other", "repository:a:pull", t0), std::nullopt);
  // Refreshed before expiry: at 90% of its life.
  EXPECT_EQ(cache.find("hub", "repository:a:pull", t0 + 271s), std::nullopt);
}

TEST(TokenCache, ShortLivedAndErase) {
  token_cache cache;
  const auto t0 = token_cache::clock::now();
  // Shorter than the 5 s safety margin: used for half of its life.
  cache.store("hub", "s", "tok", 4s, t0);
  EXPECT_EQ(cache.find("hub", "s", t0 + 1s), "tok");
  EXPECT_EQ(cache.find("hub", "s", t0 + 2s), std::nullopt);
  cache.store("hub", "s", "tok", 60s, t0);
  EXPECT_EQ(cache.find("hub", "s", t0), "tok");
  EXPECT_EQ(cache.find("hub", "s", t0 + 54s), std::nullopt);  // 6 s (10%) early
  cache.erase("hub", "s");
  EXPECT_EQ(cache.find("hub", "s", t0), std::nullopt);
  cache.store("hub", "s", "tok", 0s, t0);
  EXPECT_EQ(cache.find("hub", "s", t0), std::nullopt);
}

struct token_case {
  std::string json;
  std::optional<std::string> token;
  long expires = 60;
};

class TokenResponse : public ::testing::TestWithParam<token_case> {};

TEST_P(TokenResponse, Parses) {
  const auto& c = GetParam();
  auto r = parse_token_response(c.json);
  if (!c.token) {
    EXPECT_FALSE(r.has_value()) << c.json;
    return;
  }
  ASSERT_TRUE(r.has_value()) << c.json;
  EXPECT_EQ(r->token, *c.token);
  EXPECT_EQ(r->expires_in.count(), c.expires);
}

INSTANTIATE_TEST_SUITE_P(
    Table, TokenResponse,
    ::testing::Values(token_case{R"({"token":"abc","expires_in":300})", "abc", 300},
                      token_case{R"({"access_token":"xyz"})", "xyz", 60},
                      token_case{R"({"token":"t","access_token":"u","expires_in":120})", "t", 120},
                      token_case{R"({"token":"t","expires_in":-5})", "t", 60},
                      token_case{R"({"token":"t","expires_in":99999999999})", "t", 86400},
                      token_case{R"({"token":"t","expires_in":"300"})", "t", 60},
                      token_case{R"({"token":""})", std::nullopt},
                      token_case{R"({"token":5})", std::nullopt},
                      token_case{R"([1,2])", std::nullopt}, token_case{"", std::nullopt},
                      token_case{"{", std::nullopt},
                      token_case{std::string(100, '[') + std::string(100, ']'), std::nullopt}));

config::upstream upstream_on(std::string host, std::string scheme = "https",
                             std::uint16_t port = 443) {
  config::upstream u;
  u.name = "u";
  u.scheme = std::move(scheme);
  u.host = std::move(host);
  u.port = port;
  return u;
}

// Whether `u` may send credentials to a realm at scheme://host:port.
bool realm_host_allowed(const config::upstream& u, std::string_view host,
                        std::string_view scheme = "https", std::uint16_t port = 443) {
  return realm_allowed(u, realm_location{scheme, host, port});
}

TEST(RealmHost, ParentDomainRule) {
  const auto hub = upstream_on("registry-1.docker.io");
  EXPECT_TRUE(realm_host_allowed(hub, "registry-1.docker.io"));
  EXPECT_TRUE(realm_host_allowed(hub, "auth.docker.io"));
  EXPECT_TRUE(realm_host_allowed(hub, "AUTH.DOCKER.IO"));
  EXPECT_TRUE(realm_host_allowed(hub, "docker.io"));
  EXPECT_FALSE(realm_host_allowed(hub, "evil.io"));
  EXPECT_FALSE(realm_host_allowed(hub, "docker.io.evil.com"));
  EXPECT_FALSE(realm_host_allowed(hub, "notdocker.io"));
  EXPECT_FALSE(realm_host_allowed(hub, "169.254.169.254"));

  const auto ar = upstream_on("europe-docker.pkg.dev");
  EXPECT_TRUE(realm_host_allowed(ar, "europe-docker.pkg.dev"));
  EXPECT_FALSE(realm_host_allowed(ar, "evil.dev"));  // "dev" alone is no parent domain

  const auto ip = upstream_on("127.0.0.1");
  EXPECT_TRUE(realm_host_allowed(ip, "127.0.0.1"));
  EXPECT_FALSE(realm_host_allowed(ip, "127.0.0.1", "https", 8443));
  EXPECT_FALSE(realm_host_allowed(ip, "127.0.0.2"));
  EXPECT_FALSE(realm_host_allowed(ip, "0.1"));

  const auto single = upstream_on("registry");
  EXPECT_FALSE(realm_host_allowed(single, "auth"));
}

TEST(BasicAuthorization, Base64) {
  EXPECT_EQ(basic_authorization("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
  EXPECT_EQ(basic_authorization("a", "b"), "Basic YTpi");
  EXPECT_EQ(basic_authorization("ab", "c"), "Basic YWI6Yw==");
  EXPECT_EQ(basic_authorization("", ""), "Basic Og==");
}

TEST(PullScope, Format) {
  EXPECT_EQ(pull_scope("library/alpine"), "repository:library/alpine:pull");
}

TEST(UsableLifetime, EarlyRefresh) {
  EXPECT_EQ(usable_lifetime(3600s), 3240s);  // 10% early
  EXPECT_EQ(usable_lifetime(30s), 25s);      // at least 5 s early
  EXPECT_EQ(usable_lifetime(6s), 3s);        // but used for half its life
  EXPECT_EQ(usable_lifetime(1s), 1s);        // whole seconds: half of 1 s rounds to 0
  EXPECT_EQ(usable_lifetime(0s), 0s);
  EXPECT_EQ(usable_lifetime(-5s), 0s);
}

TEST(TokenCache, EraseOnlyTheRefusedToken) {
  token_cache cache;
  const auto t0 = token_cache::clock::now();
  cache.store("u", "s", "new", 60s, t0);
  cache.erase("u", "s", "old");  // a request that used an older token was refused
  EXPECT_EQ(cache.find("u", "s", t0), "new");
  cache.erase("u", "s", "new");
  EXPECT_EQ(cache.find("u", "s", t0), std::nullopt);
}

TEST(RealmHost, ConfiguredList) {
  auto u = upstream_on("us-docker.pkg.dev");
  u.auth.realm_hosts = {"auth.example.com", "*.tokens.example.org"};
  EXPECT_TRUE(realm_host_allowed(u, "us-docker.pkg.dev"));  // its own host, always
  EXPECT_TRUE(realm_host_allowed(u, "auth.example.com"));
  EXPECT_TRUE(realm_host_allowed(u, "AUTH.example.com"));
  EXPECT_TRUE(realm_host_allowed(u, "a.tokens.example.org"));
  EXPECT_FALSE(realm_host_allowed(u, "tokens.example.org"));
  EXPECT_FALSE(realm_host_allowed(u, "eviltokens.example.org"));
  EXPECT_FALSE(realm_host_allowed(u, "x.auth.example.com"));
  // The list replaces the parent-domain default.
  EXPECT_FALSE(realm_host_allowed(u, "eu-docker.pkg.dev"));

  auto ip = upstream_on("127.0.0.1");
  ip.auth.realm_hosts = {"127.0.0.2"};
  EXPECT_TRUE(realm_host_allowed(ip, "127.0.0.2"));
  EXPECT_FALSE(realm_host_allowed(ip, "127.0.0.3"));
}

// Issue 25: the scheme and the port are part of the check.
TEST(RealmHost, SchemeAndPortCount) {
  const auto hub = upstream_on("registry-1.docker.io");
  EXPECT_FALSE(realm_host_allowed(hub, "auth.docker.io", "http", 443));
  EXPECT_FALSE(realm_host_allowed(hub, "auth.docker.io", "http", 80));
  EXPECT_FALSE(realm_host_allowed(hub, "registry-1.docker.io", "http", 443));
  EXPECT_FALSE(realm_host_allowed(hub, "registry-1.docker.io", "https", 22));
  EXPECT_FALSE(realm_host_allowed(hub, "auth.docker.io", "https", 9401));
  EXPECT_FALSE(realm_host_allowed(hub, "auth.docker.io", "ftp", 443));

  // An http upstream may use an http or https realm, on its own port.
  const auto plain = upstream_on("127.0.0.1", "http", 5000);
  EXPECT_TRUE(realm_host_allowed(plain, "127.0.0.1", "http", 5000));
  EXPECT_TRUE(realm_host_allowed(plain, "127.0.0.1", "https", 5000));
  EXPECT_FALSE(realm_host_allowed(plain, "127.0.0.1", "http", 5001));

  auto listed = upstream_on("registry.example.com", "https", 5000);
  listed.auth.realm_hosts = {"auth.example.com:5001", "tokens.example.com", "[::1]:7000", "::2",
                             "*.example.net:8443"};
  EXPECT_TRUE(realm_host_allowed(listed, "auth.example.com", "https", 5001));
  EXPECT_FALSE(realm_host_allowed(listed, "auth.example.com", "https", 443));
  EXPECT_TRUE(realm_host_allowed(listed, "tokens.example.com", "https", 443));
  EXPECT_FALSE(realm_host_allowed(listed, "tokens.example.com", "https", 5000));
  EXPECT_FALSE(realm_host_allowed(listed, "tokens.example.com", "http", 443));
  EXPECT_TRUE(realm_host_allowed(listed, "::1", "https", 7000));
  EXPECT_TRUE(realm_host_allowed(listed, "::2", "https", 443));
  EXPECT_TRUE(realm_host_allowed(listed, "a.example.net", "https", 8443));
  EXPECT_FALSE(realm_host_allowed(listed, "a.example.net", "https", 443));
  EXPECT_TRUE(realm_host_allowed(listed, "registry.example.com", "https", 5000));
}

TEST(MetadataToken, Parses) {
  auto t =
      parse_metadata_token(R"({"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"})");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->token, "ya29.x");
  EXPECT_EQ(t->expires_in, 3599s);
  auto no_type = parse_metadata_token(R"({"access_token":"a","expires_in":10})");
  ASSERT_TRUE(no_type.has_value());
  EXPECT_EQ(no_type->expires_in, 10s);
  EXPECT_FALSE(parse_metadata_token(R"({"token":"a","expires_in":10})"));  // registry style
  EXPECT_FALSE(parse_metadata_token(R"({"access_token":"","expires_in":10})"));
  EXPECT_FALSE(parse_metadata_token(R"({"access_token":"a","token_type":"MAC"})"));
  EXPECT_FALSE(parse_metadata_token(R"({"access_token":7})"));
  EXPECT_FALSE(parse_metadata_token("not json"));
  EXPECT_FALSE(parse_metadata_token("[]"));
}

TEST(Base64Decode, RoundTripsAndRejects) {
  EXPECT_EQ(base64_decode("QWxhZGRpbjpvcGVuIHNlc2FtZQ=="), "Aladdin:open sesame");
  EXPECT_EQ(base64_decode("YTpi"), "a:b");
  EXPECT_EQ(base64_decode("YWI6Yw=="), "ab:c");
  EXPECT_EQ(base64_decode("YWI6YyE="), "ab:c!");
  EXPECT_EQ(base64_decode(""), "");
  EXPECT_FALSE(base64_decode("YTp"));       // length
  EXPECT_FALSE(base64_decode("YT!i"));      // alphabet
  EXPECT_FALSE(base64_decode("Y=pi"));      // padding inside
  EXPECT_FALSE(base64_decode("YQ==YTpi"));  // data after padding
}

TEST(DockerRegistryKey, Normalises) {
  EXPECT_EQ(docker_registry_key("https://us-docker.pkg.dev"), "us-docker.pkg.dev");
  EXPECT_EQ(docker_registry_key("HTTP://Host:5000/v2/"), "host:5000");
  EXPECT_EQ(docker_registry_key("host:5000"), "host:5000");
  EXPECT_EQ(docker_registry_key("https://index.docker.io/v1/"), "index.docker.io");
  EXPECT_EQ(docker_registry_key("registry-1.docker.io"), "index.docker.io");
  EXPECT_EQ(docker_registry_key("docker.io"), "index.docker.io");
  EXPECT_EQ(docker_helper_server_url("index.docker.io"), "https://index.docker.io/v1/");
  EXPECT_EQ(docker_helper_server_url("us-docker.pkg.dev"), "us-docker.pkg.dev");
}

TEST(DockerConfig, ParsesEveryCredentialForm) {
  std::string error;
  const auto file = parse_docker_config(R"({
    "auths": {
      "https://index.docker.io/v1/": {"auth": "YWxpY2U6cHc6d2l0aDpjb2xvbnM="},
      "ghcr.io": {"username": "bob", "password": "bobpw"},
      "quay.io": {"auth": "", "identitytoken": "refresh-me"},
      "empty.example": {}
    },
    "credHelpers": {"us-docker.pkg.dev": "gcloud", "https://EU-docker.pkg.dev": "gcloud"},
    "credsStore": "desktop",
    "HttpHeaders": {"User-Agent": "x"}
  })",
                                        error);
  ASSERT_TRUE(file.has_value()) << error;
  ASSERT_EQ(file->auths.size(), 4u);
  const auto& hub = file->auths.at("index.docker.io");
  EXPECT_EQ(hub.username, "alice");
  EXPECT_EQ(hub.password, "pw:with:colons");
  EXPECT_EQ(file->auths.at("ghcr.io").username, "bob");
  EXPECT_EQ(file->auths.at("ghcr.io").password, "bobpw");
  EXPECT_EQ(file->auths.at("quay.io").identity_token, "refresh-me");
  EXPECT_EQ(file->cred_helpers.at("us-docker.pkg.dev"), "gcloud");
  EXPECT_EQ(file->cred_helpers.at("eu-docker.pkg.dev"), "gcloud");
  EXPECT_EQ(file->creds_store, "desktop");
}

TEST(DockerConfig, RejectsMalformedFilesWithoutQuotingSecrets) {
  const std::pair<const char*, const char*> cases[] = {
      {"{", "not valid JSON"},
      {"[]", "not a JSON object"},
      {R"({"auths": []})", "\"auths\" is not an object"},
      {R"({"auths": {"h": 5}})", "auths[\"h\"] is not an object"},
      {R"({"auths": {"h": {"auth": "!!!!"}}})", "not base64 of user:password"},
      {R"({"auths": {"h": {"auth": "bm9jb2xvbg=="}}})", "not base64 of user:password"},
      {R"({"auths": {"h": {"password": 5}}})", "not a string"},
      {R"({"credHelpers": {"h": "../../bin/sh"}})", "is not a helper name"},
      {R"({"credHelpers": {"h": 1}})", "is not a helper name"},
      {R"({"credsStore": "a b"})", "\"credsStore\" is not a helper name"},
      {R"({"credsStore": 3})", "\"credsStore\" is not a string"},
  };
  for (const auto& [json, fragment] : cases) {
    SCOPED_TRACE(json);
    std::string error;
    EXPECT_FALSE(parse_docker_config(json, error).has_value());
    EXPECT_NE(error.find(fragment), std::string::npos) << error;
    EXPECT_EQ(error.find("bm9jb2xvbg"), std::string::npos);
  }
  std::string error;
  EXPECT_TRUE(parse_docker_config("{}", error).has_value());
  EXPECT_TRUE(parse_docker_config(R"({"auths": null, "credsStore": ""})", error).has_value());
}

TEST(DockerConfig, PlanFollowsDockerPrecedence) {
  std::string error;
  const auto file = parse_docker_config(R"({
    "auths": {"a.example": {"auth": "dTpw"}, "b.example": {"auth": "dTpw"}, "c.example": {}},
    "credHelpers": {"b.example": "helper-b"}
  })",
                                        error);
  ASSERT_TRUE(file);
  const auto a = plan_docker_credentials(*file, "a.example");
  EXPECT_TRUE(a.helper.empty());
  ASSERT_TRUE(a.entry.has_value());
  EXPECT_EQ(a.entry->username, "u");
  EXPECT_EQ(a.entry->password, "p");
  EXPECT_EQ(plan_docker_credentials(*file, "b.example").helper, "helper-b");  // helper first
  EXPECT_FALSE(plan_docker_credentials(*file, "c.example").entry);  // an empty entry: none
  EXPECT_FALSE(plan_docker_credentials(*file, "d.example").entry);
  EXPECT_TRUE(plan_docker_credentials(*file, "d.example").helper.empty());

  auto with_store = *file;
  with_store.creds_store = "desktop";
  EXPECT_EQ(plan_docker_credentials(with_store, "a.example").helper, "desktop");
  EXPECT_EQ(plan_docker_credentials(with_store, "b.example").helper, "helper-b");
}

TEST(HelperOutput, Parses) {
  auto basic = parse_helper_output(R"({"ServerURL":"h","Username":"u","Secret":"s"})");
  ASSERT_TRUE(basic);
  EXPECT_EQ(basic->username, "u");
  EXPECT_EQ(basic->password, "s");
  EXPECT_TRUE(basic->identity_token.empty());
  auto token = parse_helper_output(R"({"ServerURL":"h","Username":"<token>","Secret":"rt"})");
  ASSERT_TRUE(token);
  EXPECT_EQ(token->identity_token, "rt");
  EXPECT_TRUE(token->password.empty());
  EXPECT_FALSE(parse_helper_output(R"({"Username":"u","Secret":""})"));
  EXPECT_FALSE(parse_helper_output(R"({"Username":"","Secret":"s"})"));
  EXPECT_FALSE(parse_helper_output(R"({"Username":"u","Secret":5})"));
  EXPECT_FALSE(parse_helper_output("credentials not found in native keychain"));
  EXPECT_FALSE(parse_helper_output(""));
}

}  // namespace
}  // namespace layercache::registry
