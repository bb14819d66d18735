#include <gtest/gtest.h>

#include "registry/upstream_client.hpp"

namespace layercache::registry {
namespace {

using namespace std::chrono_literals;

redirect_memory::place storage(std::string target) {
  redirect_memory::place p;
  p.where = origin{"https", "storage.example", 443};
  p.target = std::move(target);
  return p;
}

TEST(RedirectMemory, RemembersUntilItsDeadline) {
  redirect_memory m;
  const auto t0 = redirect_memory::clock::now();
  m.remember("/v2/a/blobs/sha256:1", storage("/data/1?sig=x"), t0 + 60s, t0);
  auto found = m.find("/v2/a/blobs/sha256:1", t0 + 59s);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->where.key(), origin({"https", "storage.example", 443}).key());
  EXPECT_EQ(found->target, "/data/1?sig=x");
  EXPECT_FALSE(m.find("/v2/b/blobs/sha256:1", t0));  // another repository's path
  EXPECT_FALSE(m.find("/v2/a/blobs/sha256:1", t0 + 60s));
  EXPECT_EQ(m.size(), 0u) << "an expired place is dropped when found";
}

TEST(RedirectMemory, ANewerPlaceReplacesAndForgetRemoves) {
  redirect_memory m;
  const auto t0 = redirect_memory::clock::now();
  m.remember("/v2/a/blobs/sha256:1", storage("/old"), t0 + 60s, t0);
  m.remember("/v2/a/blobs/sha256:1", storage("/new"), t0 + 60s, t0);
  EXPECT_EQ(m.find("/v2/a/blobs/sha256:1", t0)->target, "/new");
  m.forget("/v2/a/blobs/sha256:1");
  EXPECT_FALSE(m.find("/v2/a/blobs/sha256:1", t0));
}

TEST(RedirectMemory, StaysWithinItsCapacity) {
  redirect_memory m(4);
  const auto t0 = redirect_memory::clock::now();
  m.remember("/1", storage("/1"), t0 + 1s, t0);
  m.remember("/2", storage("/2"), t0 + 1s, t0);
  m.remember("/3", storage("/3"), t0 + 60s, t0);
  m.remember("/4", storage("/4"), t0 + 60s, t0);
  // Full at t0 + 2s: the two expired places go, the live ones stay.
  m.remember("/5", storage("/5"), t0 + 60s, t0 + 2s);
  EXPECT_EQ(m.size(), 3u);
  EXPECT_TRUE(m.find("/3", t0 + 2s));
  // Full with live places only: all are dropped (they are only a shortcut).
  m.remember("/6", storage("/6"), t0 + 60s, t0 + 2s);
  EXPECT_EQ(m.size(), 4u);
  m.remember("/7", storage("/7"), t0 + 60s, t0 + 2s);
  EXPECT_EQ(m.size(), 1u);
  EXPECT_TRUE(m.find("/7", t0 + 2s));
  // Replacing a remembered place never drops others.
  m.remember("/7", storage("/7b"), t0 + 60s, t0 + 2s);
  EXPECT_EQ(m.size(), 1u);
}

}  // namespace
}  // namespace layercache::registry
