// The parts of upstream.access: client that do no I/O: what the upstream said and for how
// long, the key credentials are remembered by, and a token's expiry.
#include <gtest/gtest.h>

#include "registry/auth.hpp"
#include "server/access.hpp"

namespace layercache::server {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

const oci::digest blob = *oci::digest::parse("sha256:" + std::string(64, 'a'));
const oci::digest other = *oci::digest::parse("sha256:" + std::string(64, 'b'));

// base64url without padding, as JWTs carry their parts.
std::string base64url(std::string_view bytes) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(alphabet[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(alphabet[(acc << (6 - bits)) & 0x3f]);
  return out;
}

std::string jwt(std::string_view payload) {
  return base64url(R"({"alg":"RS256","typ":"JWT"})") + "." + base64url(payload) + ".c2lnbmF0dXJl";
}

TEST(AccessBook, AnAllowanceHoldsForItsCredentialAndRepositoryUntilItsDeadline) {
  access_book book;
  const auto now = steady::now();
  book.allow("key-a", "team/app", now + 10s, now);
  EXPECT_TRUE(book.allowed("key-a", "team/app", now));
  EXPECT_TRUE(book.allowed("key-a", "team/app", now + 9s));
  EXPECT_FALSE(book.allowed("key-a", "team/app", now + 10s));
  EXPECT_FALSE(book.allowed("key-b", "team/app", now));
  EXPECT_FALSE(book.allowed("key-a", "team/other", now));
  EXPECT_FALSE(book.allowed("", "team/app", now));  // anonymous is a credential of its own
  // A key and a repository never run together into another pair.
  book.allow("k", "a\nb", now + 10s, now);
  EXPECT_FALSE(book.allowed("k\na", "b", now));
}

TEST(AccessBook, AnAllowanceAlreadyOverIsNotKeptAndALaterOneExtends) {
  access_book book;
  const auto now = steady::now();
  book.allow("k", "r", now, now);
  EXPECT_FALSE(book.allowed("k", "r", now));
  book.allow("k", "r", now + 5s, now);
  book.allow("k", "r", now + 2s, now);  // a shorter one does not cut the longer short
  EXPECT_TRUE(book.allowed("k", "r", now + 4s));
}

TEST(AccessBook, MembersArePerRepositoryAndDigest) {
  access_book book;
  const auto now = steady::now();
  book.learn("team/app", blob, now + 10s, now);
  EXPECT_TRUE(book.member("team/app", blob, now));
  EXPECT_FALSE(book.member("team/app", other, now));
  EXPECT_FALSE(book.member("public/base", blob, now));
  EXPECT_FALSE(book.member("team/app", blob, now + 11s));
}

TEST(AccessBook, AFullBookDropsExpiredEntriesFirstThenEverything) {
  access_book book(4);
  const auto now = steady::now();
  book.allow("k", "old1", now + 1s, now);
  book.allow("k", "old2", now + 1s, now);
  book.allow("k", "live1", now + 60s, now);
  book.allow("k", "live2", now + 60s, now);
  book.allow("k", "new", now + 60s, now + 2s);  // the two expired ones make room
  EXPECT_TRUE(book.allowed("k", "live1", now + 2s));
  EXPECT_TRUE(book.allowed("k", "new", now + 2s));
  book.allow("k", "n2", now + 60s, now + 2s);
  book.allow("k", "n3", now + 60s, now + 2s);  // full of live entries: all go
  EXPECT_TRUE(book.allowed("k", "n3", now + 2s));
  EXPECT_FALSE(book.allowed("k", "live1", now + 2s));
}

TEST(AccessKeys, CredentialsAreKeptOnlyAsTheirHash) {
  const std::string secret = registry::basic_authorization("alice", "pa55word");
  const std::string key = credential_key(secret);
  EXPECT_EQ(key.size(), 64u);
  EXPECT_EQ(key.find("pa55word"), std::string::npos);
  EXPECT_EQ(key.find("alice"), std::string::npos);
  EXPECT_EQ(key, credential_key(secret));
  EXPECT_NE(key, credential_key(registry::basic_authorization("alice", "pa55word2")));
  EXPECT_EQ(credential_key(""), "");
}

TEST(AccessKeys, ABearerJwtsExpiryIsReadFromItsPayload) {
  const auto exp = bearer_expiry("Bearer " + jwt(R"({"sub":"a","exp":1900000000})"));
  ASSERT_TRUE(exp.has_value());
  EXPECT_EQ(exp->time_since_epoch(), std::chrono::seconds(1900000000));
  EXPECT_TRUE(bearer_expiry("bearer " + jwt(R"({"exp":1900000000.5})")).has_value());
  // Anything else has none.
  EXPECT_FALSE(bearer_expiry("Bearer " + jwt(R"({"sub":"a"})")).has_value());
  EXPECT_FALSE(bearer_expiry("Bearer " + jwt(R"({"exp":"soon"})")).has_value());
  EXPECT_FALSE(bearer_expiry("Bearer " + jwt("not json")).has_value());
  EXPECT_FALSE(bearer_expiry("Bearer opaque-token").has_value());
  EXPECT_FALSE(bearer_expiry("Bearer a.!!!.c").has_value());
  EXPECT_FALSE(bearer_expiry(registry::basic_authorization("a", "b.c.d")).has_value());
  EXPECT_FALSE(bearer_expiry("").has_value());
}

TEST(AccessKeys, ACheckIsTrustedForTheTtlCutToTheTokensExpiry) {
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1800000000));
  const config::duration ttl = 60s;
  EXPECT_EQ(trusted_for(registry::basic_authorization("a", "b"), ttl, now), 60s);
  EXPECT_EQ(trusted_for("Bearer opaque", ttl, now), 60s);
  EXPECT_EQ(trusted_for("Bearer " + jwt(R"({"exp":1800000020})"), ttl, now), 20s);
  EXPECT_EQ(trusted_for("Bearer " + jwt(R"({"exp":1800000600})"), ttl, now), 60s);
  EXPECT_EQ(trusted_for("Bearer " + jwt(R"({"exp":1799999999})"), ttl, now),
            steady::duration::zero());
}

}  // namespace
}  // namespace layercache::server
