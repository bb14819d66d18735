#include "server/client_auth.hpp"

#include <gtest/gtest.h>

#include "registry/auth.hpp"

namespace layercache::server {
namespace {

TEST(ClientCredentials, BearerOrBasicPasswordMatchesTheToken) {
  const std::string token = "s3cr3t-token";
  EXPECT_TRUE(client_credentials_ok("Bearer s3cr3t-token", token));
  EXPECT_TRUE(client_credentials_ok("bearer s3cr3t-token", token));
  EXPECT_TRUE(client_credentials_ok(registry::basic_authorization("anyone", token), token));
  EXPECT_TRUE(client_credentials_ok(registry::basic_authorization("", token), token));
  // A password containing ':' is everything after the first ':'.
  EXPECT_TRUE(client_credentials_ok(registry::basic_authorization("u", "a:b"), "a:b"));

  EXPECT_FALSE(client_credentials_ok("", token));
  EXPECT_FALSE(client_credentials_ok("Bearer", token));
  EXPECT_FALSE(client_credentials_ok("Bearer ", token));
  EXPECT_FALSE(client_credentials_ok("Bearer s3cr3t-toke", token));
  EXPECT_FALSE(client_credentials_ok("Bearer s3cr3t-token ", token));
  EXPECT_FALSE(client_credentials_ok("Bearers3cr3t-token", token));
  EXPECT_FALSE(client_credentials_ok("Token s3cr3t-token", token));
  EXPECT_FALSE(client_credentials_ok(registry::basic_authorization("s3cr3t-token", "x"), token));
  EXPECT_FALSE(client_credentials_ok("Basic !!!notbase64", token));
  EXPECT_FALSE(client_credentials_ok("Basic czNjcjN0LXRva2Vu", token));  // no ':' inside
  EXPECT_FALSE(client_credentials_ok("Bearer ", ""));  // no token configured: nothing matches
}

}  // namespace
}  // namespace layercache::server
