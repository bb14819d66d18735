#include "oci/digest.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <string_view>

namespace layercache::oci {
namespace {

constexpr std::string_view empty_sha256 =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr std::string_view abc_sha256 =
    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr std::string_view abc_sha512 =
    "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";

TEST(digest, known_sha256) {
  EXPECT_EQ(digest_of("").str(), empty_sha256);
  EXPECT_EQ(digest_of("abc").str(), abc_sha256);
  EXPECT_EQ(digest_of("abc", digest_algorithm::sha512).str(), abc_sha512);
}

TEST(digest, incremental_matches_one_shot) {
  hasher h;
  h.update("a");
  h.update("");
  h.update(std::string_view("bc"));
  EXPECT_EQ(h.finish().str(), abc_sha256);
}

TEST(digest, hex_and_raw) {
  const auto d = digest_of("abc");
  EXPECT_EQ(d.algorithm(), digest_algorithm::sha256);
  EXPECT_EQ(d.hex(), abc_sha256.substr(7));
  const std::string raw = d.raw();
  ASSERT_EQ(raw.size(), 32u);
  EXPECT_EQ(static_cast<unsigned char>(raw[0]), 0xba);
  EXPECT_EQ(static_cast<unsigned char>(raw[1]), 0x78);
  EXPECT_EQ(static_cast<unsigned char>(raw[31]), 0xad);
  EXPECT_EQ(digest_of("abc", digest_algorithm::sha512).raw().size(), 64u);
}

struct parse_case {
  std::string name;
  std::string input;
  bool valid;
  friend void PrintTo(const parse_case& c, std::ostream* os) { *os << c.name; }
};

class digest_parse : public testing::TestWithParam<parse_case> {};

TEST_P(digest_parse, accepts_or_rejects) {
  const auto& c = GetParam();
  const auto d = digest::parse(c.input);
  EXPECT_EQ(d.has_value(), c.valid) << c.input;
  if (d) {
    EXPECT_EQ(d->str(), c.input);
    EXPECT_EQ(digest::parse(d->str()), d);
  }
}

const std::string hex64(64, 'a');

INSTANTIATE_TEST_SUITE_P(
    table, digest_parse,
    testing::Values(parse_case{"empty_sha256", std::string(empty_sha256), true},
                    parse_case{"abc_sha512", std::string(abc_sha512), true},
                    parse_case{"all_a", "sha256:" + hex64, true}, parse_case{"empty", "", false},
                    parse_case{"algorithm_only", "sha256:", false},
                    parse_case{"no_algorithm", hex64, false},
                    parse_case{"colon_only", ":" + hex64, false},
                    parse_case{"uppercase_hex", "sha256:" + std::string(64, 'A'), false},
                    parse_case{"uppercase_algorithm", "SHA256:" + hex64, false},
                    parse_case{"short", "sha256:" + std::string(63, 'a'), false},
                    parse_case{"long", "sha256:" + std::string(65, 'a'), false},
                    parse_case{"sha512_with_64", "sha512:" + hex64, false},
                    parse_case{"non_hex", "sha256:" + std::string(63, 'a') + "g", false},
                    parse_case{"nul_byte", "sha256:" + std::string(63, 'a') + std::string(1, '\0'),
                               false},
                    parse_case{"trailing_space", "sha256:" + hex64 + " ", false},
                    parse_case{"leading_space", " sha256:" + hex64, false},
                    parse_case{"unknown_algorithm", "md5:d41d8cd98f00b204e9800998ecf8427e", false},
                    parse_case{"overlong", "sha256:" + std::string(100000, 'a'), false}),
    [](const testing::TestParamInfo<parse_case>& info) { return info.param.name; });

TEST(digest, ordering_and_equality) {
  const auto a = digest_of("a");
  const auto b = digest_of("b");
  EXPECT_NE(a, b);
  EXPECT_EQ(a, digest_of("a"));
  EXPECT_TRUE((a < b) != (b < a));
}

}  // namespace
}  // namespace layercache::oci
