#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "oci/range.hpp"

namespace layercache::oci {
namespace {

constexpr std::uint64_t u64_max = std::numeric_limits<std::uint64_t>::max();

// The two kinds of range never convert into one another unasked, and loose numbers never
// become an interval without a constructor saying which numbers they are.
static_assert(!std::is_convertible_v<byte_range, byte_interval>);
static_assert(!std::is_convertible_v<byte_interval, byte_range>);
static_assert(std::is_constructible_v<byte_interval, byte_range>);
static_assert(std::is_constructible_v<byte_range, byte_interval>);
static_assert(!std::is_aggregate_v<byte_interval>);
static_assert(std::is_trivially_copyable_v<byte_interval>);

TEST(byte_interval, length_and_empty) {
  EXPECT_EQ((byte_interval{0, 100}.length()), 100u);
  EXPECT_FALSE((byte_interval{0, 100}.empty()));
  EXPECT_EQ((byte_interval{5, 6}.length()), 1u);
  EXPECT_TRUE(byte_interval{}.empty());
  EXPECT_EQ(byte_interval{}.length(), 0u);
  EXPECT_TRUE((byte_interval{7, 7}.empty()));
  // end before begin: empty, never a huge unsigned length.
  EXPECT_TRUE((byte_interval{9, 3}.empty()));
  EXPECT_EQ((byte_interval{9, 3}.length()), 0u);
  EXPECT_EQ((byte_interval{0, u64_max}.length()), u64_max);
}

TEST(byte_interval, at_takes_an_offset_and_a_length) {
  EXPECT_EQ(byte_interval::at(4096, 7), (byte_interval{4096, 4103}));
  EXPECT_TRUE(byte_interval::at(10, 0).empty());
}

TEST(byte_interval, contains_its_begin_but_not_its_end) {
  const byte_interval i{10, 20};
  EXPECT_FALSE(i.contains(9));
  EXPECT_TRUE(i.contains(10));
  EXPECT_TRUE(i.contains(19));
  EXPECT_FALSE(i.contains(20));
  EXPECT_FALSE((byte_interval{5, 5}.contains(5)));
}

TEST(byte_interval, intersect) {
  const byte_interval i{10, 20};
  EXPECT_EQ(i.intersect({0, 15}), (byte_interval{10, 15}));
  EXPECT_EQ(i.intersect({15, 30}), (byte_interval{15, 20}));
  EXPECT_EQ(i.intersect({12, 13}), (byte_interval{12, 13}));
  EXPECT_EQ(i.intersect({0, 100}), i);
  // Touching is not overlapping: [10, 20) and [20, 30) share no byte.
  EXPECT_TRUE(i.intersect({20, 30}).empty());
  EXPECT_TRUE(i.intersect({0, 10}).empty());
  EXPECT_TRUE(i.intersect({40, 50}).empty());
  EXPECT_TRUE(i.intersect({}).empty());
}

TEST(byte_interval, converts_to_and_from_the_closed_http_range) {
  struct row {
    byte_range closed;
    byte_interval half_open;
  };
  const row table[] = {
      {{0, 99}, {0, 100}},
      {{0, 0}, {0, 1}},
      {{5, 9}, {5, 10}},
      {{1 << 20, (1 << 20) + 99}, {1 << 20, (1 << 20) + 100}},
      {{0, u64_max - 1}, {0, u64_max}},
  };
  for (const auto& [closed, half_open] : table) {
    EXPECT_EQ(byte_interval(closed), half_open) << closed.first << "-" << closed.last;
    EXPECT_EQ(byte_range(half_open), closed) << half_open.begin << ".." << half_open.end;
    EXPECT_EQ(byte_interval(closed).length(), closed.length());
  }
}

TEST(byte_interval, is_usable_at_compile_time) {
  constexpr byte_interval i = byte_interval(byte_range{2, 5});
  static_assert(i.begin == 2 && i.end == 6 && i.length() == 4);
  static_assert(byte_range(i) == byte_range{2, 5});
  static_assert(i.intersect({4, 100}) == byte_interval{4, 6});
}

}  // namespace
}  // namespace layercache::oci
