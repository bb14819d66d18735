#include "oci/range.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace layercache::oci {
namespace {

constexpr std::uint64_t u64_max = std::numeric_limits<std::uint64_t>::max();

range_spec bounded(std::uint64_t a, std::uint64_t b) {
  return {.k = range_spec::kind::bounded, .first = a, .last = b};
}
range_spec from(std::uint64_t a) { return {.k = range_spec::kind::from, .first = a}; }
range_spec suffix(std::uint64_t n) { return {.k = range_spec::kind::suffix, .suffix_length = n}; }

std::string repeat(const std::string& s, std::size_t n, const std::string& sep) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    if (i != 0) out += sep;
    out += s;
  }
  return out;
}

struct parse_case {
  std::string name;
  std::string input;
  range_error error;
  std::vector<range_spec> specs;
  friend void PrintTo(const parse_case& c, std::ostream* os) { *os << c.name; }
};

class range_parse : public testing::TestWithParam<parse_case> {};

TEST_P(range_parse, parses) {
  const auto& c = GetParam();
  const auto got = parse_range(c.input);
  EXPECT_EQ(got.error, c.error) << c.input.substr(0, 200);
  EXPECT_EQ(got.specs, c.specs) << c.input.substr(0, 200);
}

INSTANTIATE_TEST_SUITE_P(
    table, range_parse,
    testing::Values(
        parse_case{"bounded", "bytes=0-99", range_error::none, {bounded(0, 99)}},
        parse_case{"single_byte", "bytes=5-5", range_error::none, {bounded(5, 5)}},
        parse_case{"from", "bytes=100-", range_error::none, {from(100)}},
        parse_case{"suffix", "bytes=-500", range_error::none, {suffix(500)}},
        parse_case{"suffix_zero", "bytes=-0", range_error::none, {suffix(0)}},
        parse_case{"multi", "bytes=0-1, 5-9", range_error::none, {bounded(0, 1), bounded(5, 9)}},
        parse_case{"multi_tight",
                   "bytes=0-1,5-9,-3",
                   range_error::none,
                   {bounded(0, 1), bounded(5, 9), suffix(3)}},
        parse_case{"multi_tabs", "bytes=0-1 \t,\t 5-", range_error::none, {bounded(0, 1), from(5)}},
        parse_case{"empty_elements", "bytes=, ,0-1,, ,", range_error::none, {bounded(0, 1)}},
        parse_case{"unit_case", "BYTES=0-1", range_error::none, {bounded(0, 1)}},
        parse_case{"unit_mixed_case", "Bytes=0-1", range_error::none, {bounded(0, 1)}},
        parse_case{"surrounding_ows", "  bytes=0-1  ", range_error::none, {bounded(0, 1)}},
        parse_case{
            "u64_max", "bytes=0-18446744073709551615", range_error::none, {bounded(0, u64_max)}},
        parse_case{"leading_zeros", "bytes=000-010", range_error::none, {bounded(0, 10)}},
        parse_case{"overlap_kept",
                   "bytes=0-9,5-14,0-9",
                   range_error::none,
                   {bounded(0, 9), bounded(5, 14), bounded(0, 9)}},
        parse_case{"reversed", "bytes=10-5", range_error::malformed, {}},
        // A position past 2^64-1 is well-formed (RFC 9110 sets no bound): it saturates.
        parse_case{"overflow_last",
                   "bytes=0-99999999999999999999",
                   range_error::none,
                   {bounded(0, u64_max)}},
        parse_case{
            "overflow_first", "bytes=18446744073709551616-", range_error::none, {from(u64_max)}},
        parse_case{"overflow_first_huge",
                   "bytes=99999999999999999999999-",
                   range_error::none,
                   {from(u64_max)}},
        parse_case{"overflow_both",
                   "bytes=99999999999999999999999-99999999999999999999999",
                   range_error::none,
                   {bounded(u64_max, u64_max)}},
        parse_case{"overflow_first_before_last",
                   "bytes=99999999999999999999999-5",
                   range_error::malformed,
                   {}},
        parse_case{
            "overflow_suffix", "bytes=-18446744073709551616", range_error::none, {suffix(u64_max)}},
        parse_case{"huge_digits",
                   "bytes=0-" + std::string(100000, '9'),
                   range_error::none,
                   {bounded(0, u64_max)}},
        parse_case{"huge_digits_first",
                   "bytes=" + std::string(100000, '9') + "-",
                   range_error::none,
                   {from(u64_max)}},
        parse_case{"empty", "", range_error::malformed, {}},
        parse_case{"no_equals", "bytes", range_error::malformed, {}},
        parse_case{"no_specs", "bytes=", range_error::malformed, {}},
        parse_case{"only_commas", "bytes=, ,,", range_error::malformed, {}},
        parse_case{"dash_only", "bytes=-", range_error::malformed, {}},
        parse_case{"no_dash", "bytes=5", range_error::malformed, {}},
        parse_case{"double_dash", "bytes=--5", range_error::malformed, {}},
        parse_case{"two_dashes", "bytes=1-2-3", range_error::malformed, {}},
        parse_case{"negative", "bytes=-1-5", range_error::malformed, {}},
        parse_case{"space_in_spec", "bytes=0 - 1", range_error::malformed, {}},
        parse_case{"plus_sign", "bytes=+1-2", range_error::malformed, {}},
        parse_case{"hex", "bytes=0x1-2", range_error::malformed, {}},
        parse_case{"one_bad_of_many", "bytes=0-1,x,5-6", range_error::malformed, {}},
        parse_case{"space_before_equals", "bytes =0-1", range_error::malformed, {}},
        parse_case{"empty_unit", "=0-1", range_error::malformed, {}},
        parse_case{"nul", std::string("bytes=0-1\0", 10), range_error::malformed, {}},
        parse_case{"nul_in_unit", std::string("byt\0s=0-1", 9), range_error::malformed, {}},
        parse_case{"other_unit", "items=0-1", range_error::unsupported_unit, {}},
        parse_case{"bytes_prefix_unit", "bytesx=0-1", range_error::unsupported_unit, {}},
        parse_case{"too_many", "bytes=" + repeat("0-1", 1025, ","), range_error::too_many, {}},
        parse_case{
            "ten_thousand", "bytes=" + repeat("0-1", 10000, ", "), range_error::too_many, {}},
        parse_case{"many_empty_elements",
                   "bytes=" + std::string(100000, ',') + "0-1",
                   range_error::none,
                   {bounded(0, 1)}}),
    [](const testing::TestParamInfo<parse_case>& info) { return info.param.name; });

TEST(range_parse, max_ranges_is_inclusive) {
  const auto exactly = parse_range("bytes=" + repeat("0-1", 1024, ","));
  EXPECT_EQ(exactly.error, range_error::none);
  EXPECT_EQ(exactly.specs.size(), 1024u);
  EXPECT_EQ(parse_range("bytes=0-1,2-3", 1).error, range_error::too_many);
  EXPECT_EQ(parse_range("bytes=0-1", 1).error, range_error::none);
}

struct resolve_case {
  std::string name;
  std::vector<range_spec> specs;
  std::uint64_t size;
  std::optional<std::vector<byte_range>> expected;
  friend void PrintTo(const resolve_case& c, std::ostream* os) { *os << c.name; }
};

class range_resolve : public testing::TestWithParam<resolve_case> {};

TEST_P(range_resolve, resolves) {
  const auto& c = GetParam();
  EXPECT_EQ(resolve(c.specs, c.size), c.expected);
}

using ranges = std::vector<byte_range>;

INSTANTIATE_TEST_SUITE_P(
    table, range_resolve,
    testing::Values(resolve_case{"bounded", {bounded(0, 99)}, 1000, ranges{{0, 99}}},
                    resolve_case{"clamped", {bounded(900, 2000)}, 1000, ranges{{900, 999}}},
                    resolve_case{"clamped_u64_max", {bounded(0, u64_max)}, 10, ranges{{0, 9}}},
                    resolve_case{"from", {from(100)}, 1000, ranges{{100, 999}}},
                    resolve_case{"from_last_byte", {from(999)}, 1000, ranges{{999, 999}}},
                    resolve_case{"from_at_size", {from(1000)}, 1000, std::nullopt},
                    resolve_case{"bounded_at_size", {bounded(1000, 1001)}, 1000, std::nullopt},
                    resolve_case{"suffix", {suffix(500)}, 1000, ranges{{500, 999}}},
                    resolve_case{"suffix_equal_size", {suffix(1000)}, 1000, ranges{{0, 999}}},
                    resolve_case{"suffix_larger", {suffix(5000)}, 1000, ranges{{0, 999}}},
                    resolve_case{"suffix_u64_max", {suffix(u64_max)}, 1000, ranges{{0, 999}}},
                    resolve_case{"suffix_zero", {suffix(0)}, 1000, std::nullopt},
                    resolve_case{"size_zero", {from(0)}, 0, std::nullopt},
                    resolve_case{"size_zero_suffix", {suffix(1)}, 0, std::nullopt},
                    resolve_case{"empty_specs", {}, 10, std::nullopt},
                    resolve_case{"some_dropped",
                                 {bounded(0, 1), from(50), suffix(0), bounded(8, 20)},
                                 10,
                                 ranges{{0, 1}, {8, 9}}},
                    resolve_case{"order_kept",
                                 {bounded(5, 9), bounded(0, 1), bounded(5, 9)},
                                 10,
                                 ranges{{5, 9}, {0, 1}, {5, 9}}},
                    resolve_case{"one_byte_object",
                                 {suffix(1), from(0), bounded(0, 0)},
                                 1,
                                 ranges{{0, 0}, {0, 0}, {0, 0}}},
                    resolve_case{
                        "u64_max_size", {suffix(1)}, u64_max, ranges{{u64_max - 1, u64_max - 1}}}),
    [](const testing::TestParamInfo<resolve_case>& info) { return info.param.name; });

// A first position past 2^64-1 is past the end of any blob: unsatisfiable (416), never ignored.
// Past-the-end last positions and suffixes still select the blob's end / all of it.
TEST(range_resolve, overflowing_positions) {
  for (const std::uint64_t size : {std::uint64_t{1}, std::uint64_t{1000}, u64_max}) {
    SCOPED_TRACE(size);
    for (const char* header : {"bytes=99999999999999999999999-", "bytes=18446744073709551616-",
                               "bytes=99999999999999999999999-99999999999999999999999"}) {
      const auto parsed = parse_range(header);
      ASSERT_EQ(parsed.error, range_error::none) << header;
      EXPECT_EQ(resolve(parsed.specs, size), std::nullopt) << header;
    }
    const ranges whole{{0, size - 1}};
    EXPECT_EQ(resolve(parse_range("bytes=0-99999999999999999999").specs, size), whole);
    EXPECT_EQ(resolve(parse_range("bytes=-99999999999999999999").specs, size), whole);
    EXPECT_EQ(resolve(parse_range("bytes=0-0,99999999999999999999-").specs, size),
              (ranges{{0, 0}}));
  }
}

TEST(byte_range, length) {
  EXPECT_EQ((byte_range{0, 0}.length()), 1u);
  EXPECT_EQ((byte_range{0, 99}.length()), 100u);
  EXPECT_EQ((byte_range{10, u64_max - 1}.length()), u64_max - 10);
}

struct content_range_case {
  std::string name;
  std::string input;
  std::optional<content_range> expected;
  friend void PrintTo(const content_range_case& c, std::ostream* os) { *os << c.name; }
};

class content_range_parse : public testing::TestWithParam<content_range_case> {};

TEST_P(content_range_parse, parses) {
  const auto& c = GetParam();
  EXPECT_EQ(parse_content_range(c.input), c.expected) << c.input.substr(0, 200);
}

content_range cr(std::optional<byte_range> r, std::optional<std::uint64_t> n) {
  return content_range{r, n};
}

INSTANTIATE_TEST_SUITE_P(
    table, content_range_parse,
    testing::Values(
        content_range_case{"full", "bytes 0-99/1000", cr(byte_range{0, 99}, 1000)},
        content_range_case{"last_byte", "bytes 999-999/1000", cr(byte_range{999, 999}, 1000)},
        content_range_case{"unsatisfied", "bytes */1000", cr(std::nullopt, 1000)},
        content_range_case{"unknown_length", "bytes 0-99/*", cr(byte_range{0, 99}, std::nullopt)},
        content_range_case{"unit_case", "Bytes 0-0/1", cr(byte_range{0, 0}, 1)},
        content_range_case{"u64_max", "bytes 0-18446744073709551614/18446744073709551615",
                           cr(byte_range{0, u64_max - 1}, u64_max)},
        content_range_case{"last_eq_length", "bytes 0-1000/1000", std::nullopt},
        content_range_case{"last_lt_first", "bytes 5-4/1000", std::nullopt},
        content_range_case{"star_star", "bytes */*", std::nullopt},
        content_range_case{"no_length", "bytes 0-99", std::nullopt},
        content_range_case{"no_unit", "0-99/1000", std::nullopt},
        content_range_case{"other_unit", "items 0-99/1000", std::nullopt},
        content_range_case{"equals_form", "bytes=0-99/1000", std::nullopt},
        content_range_case{"two_spaces", "bytes  0-99/1000", std::nullopt},
        content_range_case{"no_dash", "bytes 99/1000", std::nullopt},
        content_range_case{"empty_first", "bytes -99/1000", std::nullopt},
        content_range_case{"empty_last", "bytes 0-/1000", std::nullopt},
        content_range_case{"overflow", "bytes 0-1/99999999999999999999", std::nullopt},
        content_range_case{"negative", "bytes 0-1/-5", std::nullopt},
        content_range_case{"trailing", "bytes 0-1/10x", std::nullopt},
        content_range_case{"nul", std::string("bytes 0-1/10\0", 13), std::nullopt},
        content_range_case{"empty", "", std::nullopt},
        content_range_case{"huge", "bytes 0-1/" + std::string(100000, '1'), std::nullopt}),
    [](const testing::TestParamInfo<content_range_case>& info) { return info.param.name; });

TEST(content_range, format_round_trips) {
  const std::vector<std::pair<byte_range, std::uint64_t>> table = {
      {{0, 99}, 1000}, {{0, 0}, 1}, {{5, 9}, 10}, {{0, u64_max - 1}, u64_max}};
  for (const auto& [r, size] : table) {
    const auto text = format_content_range(r, size);
    EXPECT_EQ(parse_content_range(text), cr(r, size)) << text;
  }
  EXPECT_EQ(format_content_range({0, 99}, 1000), "bytes 0-99/1000");
}

}  // namespace
}  // namespace layercache::oci
