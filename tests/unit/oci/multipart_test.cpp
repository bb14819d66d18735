#include "oci/multipart.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace layercache::oci {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

TEST(byteranges_boundary, finds_the_boundary_of_multipart_byteranges_only) {
  EXPECT_EQ(byteranges_boundary("multipart/byteranges; boundary=abc123"), "abc123");
  EXPECT_EQ(byteranges_boundary("Multipart/ByteRanges;charset=x; BOUNDARY=\"a b\""), "a b");
  EXPECT_EQ(byteranges_boundary("multipart/byteranges"), std::nullopt);
  EXPECT_EQ(byteranges_boundary("multipart/byteranges; boundary="), std::nullopt);
  EXPECT_EQ(byteranges_boundary("multipart/byteranges; boundary=" + std::string(71, 'x')),
            std::nullopt);
  EXPECT_EQ(byteranges_boundary("multipart/mixed; boundary=abc"), std::nullopt);
  EXPECT_EQ(byteranges_boundary("application/octet-stream"), std::nullopt);
}

// What docker-registry (Go's http.ServeContent) sends for "bytes=0-4,100-102".
const std::string go_body =
    "--XyZ\r\nContent-Range: bytes 0-4/1000\r\nContent-Type: application/octet-stream\r\n\r\n"
    "hello\r\n--XyZ\r\nContent-Range: bytes 100-102/1000\r\nContent-Type: "
    "application/octet-stream\r\n\r\nabc\r\n--XyZ--\r\n";

struct collected {
  bool ok = true;
  std::vector<std::pair<std::uint64_t, std::string>> runs;
};

collected read_in_steps(byteranges_reader& r, const std::string& body, std::size_t step) {
  collected c;
  auto on = [&c](std::uint64_t offset, const char* p, std::size_t n) {
    auto& runs = c.runs;
    if (!runs.empty() && runs.back().first + runs.back().second.size() == offset) {
      runs.back().second.append(p, n);
    } else {
      runs.emplace_back(offset, std::string(p, n));
    }
    return true;
  };
  for (std::size_t at = 0; at < body.size() && c.ok; at += step) {
    c.ok = r.feed(body.data() + at, std::min(step, body.size() - at), on);
  }
  return c;
}

TEST(byteranges_reader, hands_on_each_part_at_its_offset_however_the_body_is_cut) {
  for (std::size_t step : {1UL, 2UL, 3UL, 7UL, 64UL, 4096UL}) {
    byteranges_reader r("XyZ", 1000);
    const auto c = read_in_steps(r, go_body, step);
    ASSERT_TRUE(c.ok) << r.error() << " at step " << step;
    EXPECT_TRUE(r.done());
    EXPECT_THAT(c.runs, ElementsAre(Pair(0U, "hello"), Pair(100U, "abc"))) << step;
  }
}

TEST(byteranges_reader, takes_a_leading_crlf_a_preamble_and_lower_case_headers) {
  const std::string body =
      "\r\n--b\r\ncontent-range: bytes 10-11/*\r\n\r\nxy\r\n--b\r\nCONTENT-RANGE:bytes "
      "20-20/30\r\n\r\nz\r\n--b--";
  byteranges_reader r("b", 30);
  const auto c = read_in_steps(r, body, 5);
  ASSERT_TRUE(c.ok) << r.error();
  EXPECT_TRUE(r.done());
  EXPECT_THAT(c.runs, ElementsAre(Pair(10U, "xy"), Pair(20U, "z")));
}

TEST(byteranges_reader, part_data_is_not_searched_for_the_boundary) {
  const std::string data = "--b\r\n\r\n--b--";
  const std::string body = "--b\r\nContent-Range: bytes 0-" + std::to_string(data.size() - 1) +
                           "/100\r\n\r\n" + data + "\r\n--b--\r\n";
  byteranges_reader r("b", 100);
  const auto c = read_in_steps(r, body, 3);
  ASSERT_TRUE(c.ok) << r.error();
  EXPECT_THAT(c.runs, ElementsAre(Pair(0U, data)));
}

TEST(byteranges_reader, refuses_malformed_bodies) {
  auto fails = [](const std::string& body, std::uint64_t size = 1000) {
    byteranges_reader r("XyZ", size);
    const auto c = read_in_steps(r, body, 4);
    EXPECT_FALSE(c.ok) << body;
    return r.error();
  };
  EXPECT_THAT(fails("--XyZ\r\nContent-Type: x\r\n\r\nhello"), HasSubstr("without a Content-Range"));
  EXPECT_THAT(fails("--XyZ\r\nContent-Range: bytes 5-1/1000\r\n\r\n"), HasSubstr("Content-Range"));
  EXPECT_THAT(fails("--XyZ\r\nContent-Range: bytes 0-1/999\r\n\r\nab"), HasSubstr("length"));
  // Found by fuzz/multipart_fuzz.cpp: a part without the length, past the end.
  EXPECT_THAT(fails("--XyZ\r\nContent-Range: bytes 999-1000/*\r\n\r\nab"), HasSubstr("length"));
  EXPECT_THAT(fails("--XyZ\r\nno colon here\r\n\r\n"), HasSubstr("malformed"));
  EXPECT_THAT(fails("--XyZjunk\r\nContent-Range: bytes 0-1/1000\r\n\r\nab"),
              HasSubstr("delimiter"));
  EXPECT_THAT(fails(std::string(20000, 'a')), HasSubstr("too long"));
}

TEST(byteranges_reader, a_body_cut_short_is_not_done_and_the_caller_can_stop_it) {
  byteranges_reader r("XyZ", 1000);
  const auto c = read_in_steps(r, go_body.substr(0, go_body.size() / 2), 8);
  EXPECT_TRUE(c.ok);
  EXPECT_FALSE(r.done());

  byteranges_reader stop("XyZ", 1000);
  EXPECT_FALSE(stop.feed(go_body.data(), go_body.size(),
                         [](std::uint64_t, const char*, std::size_t) { return false; }));
  EXPECT_FALSE(stop.error().empty());
}

}  // namespace
}  // namespace layercache::oci
