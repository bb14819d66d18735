#include "server/auth.hpp"

#include <gtest/gtest.h>

namespace layercache::server {
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

config::upstream upstream_on(std::string host) {
  config::upstream u;
  u.name = "u";
  u.host = std::move(host);
  return u;
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

}  // namespace
}  // namespace layercache::server
