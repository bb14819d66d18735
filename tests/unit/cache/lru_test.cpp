// The blobs' recency order (cache/lru.hpp).
#include "cache/lru.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace layercache::cache::detail {
namespace {

using names = std::vector<std::string>;

names least_recent_first(blob_lru& lru) {
  names out;
  lru.visit_least_recent([&](const std::string& raw) {
    out.push_back(raw);
    return true;
  });
  return out;
}

names most_recent_first(const blob_lru& lru) {
  names out;
  lru.visit_most_recent([&](const std::string& raw) { out.push_back(raw); });
  return out;
}

TEST(blob_lru, keeps_the_order_of_use) {
  blob_lru lru;
  EXPECT_EQ(least_recent_first(lru), names{});
  lru.bump("a");
  lru.bump("b");
  lru.bump("c");
  EXPECT_EQ(lru.size(), 3U);
  EXPECT_EQ(least_recent_first(lru), (names{"a", "b", "c"}));
  EXPECT_EQ(most_recent_first(lru), (names{"c", "b", "a"}));
}

TEST(blob_lru, a_bump_makes_the_most_recent) {
  blob_lru lru;
  for (const char* raw : {"a", "b", "c"}) lru.bump(raw);
  lru.bump("a");
  EXPECT_EQ(least_recent_first(lru), (names{"b", "c", "a"}));
  lru.bump("a");  // already the most recent
  EXPECT_EQ(least_recent_first(lru), (names{"b", "c", "a"}));
  EXPECT_EQ(lru.size(), 3U);
}

TEST(blob_lru, erase_forgets) {
  blob_lru lru;
  for (const char* raw : {"a", "b", "c"}) lru.bump(raw);
  lru.erase("b");
  lru.erase("unknown");
  EXPECT_FALSE(lru.contains("b"));
  EXPECT_TRUE(lru.contains("a"));
  EXPECT_EQ(least_recent_first(lru), (names{"a", "c"}));
  lru.bump("b");  // back, as the most recent
  EXPECT_EQ(least_recent_first(lru), (names{"a", "c", "b"}));
}

TEST(blob_lru, a_visit_stops_when_asked) {
  blob_lru lru;
  for (const char* raw : {"a", "b", "c"}) lru.bump(raw);
  names seen;
  lru.visit_least_recent([&](const std::string& raw) {
    seen.push_back(raw);
    return raw != "b";
  });
  EXPECT_EQ(seen, (names{"a", "b"}));
}

// Eviction erases the blob it visits as it walks.
TEST(blob_lru, a_visit_may_erase_what_it_visits) {
  blob_lru lru;
  for (const char* raw : {"a", "b", "c", "d"}) lru.bump(raw);
  names seen;
  lru.visit_least_recent([&](const std::string& raw) {
    const std::string copy = raw;
    if (copy != "c") lru.erase(copy);
    seen.push_back(copy);
    return true;
  });
  EXPECT_EQ(seen, (names{"a", "b", "c", "d"}));
  EXPECT_EQ(least_recent_first(lru), names{"c"});
  EXPECT_EQ(lru.size(), 1U);
}

}  // namespace
}  // namespace layercache::cache::detail
