#include "oci/retry_after.hpp"

#include <gtest/gtest.h>

namespace layercache::oci {
namespace {

using namespace std::chrono;

// 1994-11-06 08:49:37 UTC, the RFC's example date.
const system_clock::time_point example =
    sys_days(year_month_day{year(1994), month(11), day(6)}) + hours(8) + minutes(49) + seconds(37);

TEST(RetryAfter, DelaySeconds) {
  const auto now = system_clock::now();
  EXPECT_EQ(parse_retry_after("120", now), seconds(120));
  EXPECT_EQ(parse_retry_after("0", now), seconds(0));
  EXPECT_EQ(parse_retry_after("  7\t", now), seconds(7));
  EXPECT_EQ(parse_retry_after("99999999999999999999999", now), hours(24));
  EXPECT_EQ(parse_retry_after("1000000", now), hours(24));
}

TEST(RetryAfter, HttpDatesInAllThreeForms) {
  const auto now = example - seconds(30);
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), seconds(30));
  EXPECT_EQ(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), seconds(30));
  EXPECT_EQ(parse_retry_after("Sun Nov  6 08:49:37 1994", now), seconds(30));
  EXPECT_EQ(parse_retry_after("Sun Nov  6 09:49:37 1994", now), seconds(30) + hours(1));
}

TEST(RetryAfter, PastDateIsNoWaitAndFarDateIsCapped) {
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", example + hours(1)), seconds(0));
  EXPECT_EQ(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", example), hours(24));
  // Fractions of a second round up: waiting too little would be refused again.
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", example - milliseconds(1)),
            seconds(1));
}

TEST(RetryAfter, GarbageIsRefused) {
  const auto now = system_clock::now();
  for (const char* bad :
       {"", " ", "-5", "1.5", "12abc", "soon", "Sun, 06 Nov 1994 08:49:37", "Sun, 06 Nov 1994",
        "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:00:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT extra", "06 Nov 1994",
        "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1969 08:49:37 GMT"}) {
    EXPECT_FALSE(parse_retry_after(bad, now).has_value()) << '"' << bad << '"';
  }
}

}  // namespace
}  // namespace layercache::oci
