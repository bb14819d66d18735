#include "oci/www_authenticate.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace layercache::oci {
namespace {

using params = std::vector<std::pair<std::string, std::string>>;

challenge ch(std::string scheme, params p = {}, std::string token68 = {}) {
  return challenge{std::move(scheme), std::move(p), std::move(token68)};
}

struct parse_case {
  std::string name;
  std::string input;
  std::vector<challenge> expected;
  friend void PrintTo(const parse_case& c, std::ostream* os) { *os << c.name; }
};

class www_authenticate_parse : public testing::TestWithParam<parse_case> {};

TEST_P(www_authenticate_parse, parses) {
  const auto& c = GetParam();
  const auto got = parse_www_authenticate(c.input);
  ASSERT_EQ(got.size(), c.expected.size()) << c.input.substr(0, 200);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].scheme, c.expected[i].scheme) << i;
    EXPECT_EQ(got[i].params, c.expected[i].params) << i;
    EXPECT_EQ(got[i].token68, c.expected[i].token68) << i;
  }
}

std::string many_challenges(std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += "Basic realm=\"r\", ";
  return out;
}

INSTANTIATE_TEST_SUITE_P(
    table, www_authenticate_parse,
    testing::Values(
        parse_case{"docker_hub",
                   "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
                   "scope=\"repository:library/alpine:pull\"",
                   {ch("bearer", {{"realm", "https://auth.docker.io/token"},
                                  {"service", "registry.docker.io"},
                                  {"scope", "repository:library/alpine:pull"}})}},
        parse_case{"basic",
                   "Basic realm=\"Registry Realm\"",
                   {ch("basic", {{"realm", "Registry Realm"}})}},
        parse_case{
            "two_challenges",
            "Basic realm=\"a\", Bearer realm=\"b\",service=\"c\"",
            {ch("basic", {{"realm", "a"}}), ch("bearer", {{"realm", "b"}, {"service", "c"}})}},
        parse_case{"scheme_only", "Negotiate", {ch("negotiate")}},
        parse_case{"schemes_only", "Negotiate, NTLM", {ch("negotiate"), ch("ntlm")}},
        parse_case{"scheme_then_params",
                   "Negotiate, Basic realm=x",
                   {ch("negotiate"), ch("basic", {{"realm", "x"}})}},
        parse_case{"token68", "Negotiate abc123+/==", {ch("negotiate", {}, "abc123+/==")}},
        parse_case{"token68_then_challenge",
                   "Negotiate abc==, Basic realm=\"r\"",
                   {ch("negotiate", {}, "abc=="), ch("basic", {{"realm", "r"}})}},
        parse_case{"token_values",
                   "Bearer realm=https, error=invalid_token",
                   {ch("bearer", {{"realm", "https"}, {"error", "invalid_token"}})}},
        parse_case{"bws_around_equals",
                   "Bearer realm = \"a\" , service\t=\t\"b\"",
                   {ch("bearer", {{"realm", "a"}, {"service", "b"}})}},
        parse_case{"case_folding", "BEARER Realm=\"MiXeD\"", {ch("bearer", {{"realm", "MiXeD"}})}},
        parse_case{"comma_in_quotes",
                   "Bearer scope=\"repository:a:pull,push\",realm=\"r\"",
                   {ch("bearer", {{"scope", "repository:a:pull,push"}, {"realm", "r"}})}},
        parse_case{"escapes",
                   R"(Basic realm="a \"quoted\" \\ back\slash")",
                   {ch("basic", {{"realm", R"(a "quoted" \ backslash)"}})}},
        parse_case{"empty_quoted", "Basic realm=\"\"", {ch("basic", {{"realm", ""}})}},
        parse_case{"empty_elements",
                   " , Basic realm=\"a\" ,, , Bearer realm=\"b\" , ",
                   {ch("basic", {{"realm", "a"}}), ch("bearer", {{"realm", "b"}})}},
        parse_case{"duplicate_params_kept",
                   "Basic realm=\"a\", realm=\"b\"",
                   {ch("basic", {{"realm", "a"}, {"realm", "b"}})}},
        parse_case{"utf8_in_quotes",
                   "Basic realm=\"caf\xc3\xa9\"",
                   {ch("basic", {{"realm", "caf\xc3\xa9"}})}},
        parse_case{"empty", "", {}}, parse_case{"whitespace", "   ", {}},
        parse_case{"commas", ",,,", {}}, parse_case{"garbage", "\"oops\"", {}},
        parse_case{"unterminated_quote", "Bearer realm=\"https://auth", {}},
        parse_case{"unterminated_after_good",
                   "Basic realm=\"a\", Bearer realm=\"b",
                   {ch("basic", {{"realm", "a"}})}},
        parse_case{"trailing_backslash", "Basic realm=\"a\\", {}},
        parse_case{"missing_value", "Basic realm=", {ch("basic", {}, "realm=")}},
        parse_case{"missing_value_then_more", "Basic realm=, x=y", {ch("basic", {}, "realm=")}},
        parse_case{
            "missing_value_quoted_next", "Basic realm= ,x=\"y\"", {ch("basic", {}, "realm=")}},
        parse_case{"equals_first", "Basic =x", {}},
        parse_case{"no_comma_between_params", "Bearer realm=\"a\" service=\"b\"", {}},
        parse_case{"no_comma_between_challenges", "Bearer foo bar", {}},
        parse_case{"garbage_after_good", "Basic realm=\"a\", @@@", {ch("basic", {{"realm", "a"}})}},
        parse_case{"scheme_equals", "Basic=realm", {}},
        parse_case{"nul_in_quotes", std::string("Basic realm=\"a\0b\"", 17), {}},
        parse_case{"nul_after", std::string("Basic realm=\"a\"\0", 16), {}},
        parse_case{"control_in_quotes", "Basic realm=\"a\x01\"", {}},
        parse_case{"del_in_quotes", "Basic realm=\"a\x7f\"", {}}),
    [](const testing::TestParamInfo<parse_case>& info) { return info.param.name; });

TEST(www_authenticate, hostile_inputs_are_bounded) {
  // Each of these must finish quickly and not crash; the exact result is secondary.
  const std::vector<std::string> inputs = {
      std::string(1 << 20, ','),
      std::string(1 << 20, ' '),
      std::string(1 << 20, 'a'),
      std::string(1 << 20, '='),
      "Basic realm=\"" + std::string(1 << 20, 'x'),
      "Basic realm=\"" + std::string(1 << 20, '\\'),
      "Basic " + std::string(1 << 20, 'a') + "=",
      many_challenges(1 << 14),
      std::string(1 << 16, '"'),
  };
  for (const auto& in : inputs) {
    const auto got = parse_www_authenticate(in);
    EXPECT_LE(got.size(), in.size());
  }
  EXPECT_EQ(parse_www_authenticate(many_challenges(10000)).size(), 10000u);
}

TEST(www_authenticate, param_lookup_is_case_insensitive) {
  const auto got = parse_www_authenticate("Bearer Realm=\"r\",SERVICE=\"s\"");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].param("realm"), "r");
  EXPECT_EQ(got[0].param("REALM"), "r");
  EXPECT_EQ(got[0].param("Service"), "s");
  EXPECT_EQ(got[0].param("scope"), std::nullopt);
}

TEST(www_authenticate, find_challenge_by_scheme) {
  const auto all = parse_www_authenticate("Basic realm=\"a\", Bearer realm=\"b\",service=\"c\"");
  const auto bearer = find_challenge(all, "Bearer");
  ASSERT_TRUE(bearer.has_value());
  EXPECT_EQ(bearer->param("realm"), "b");
  EXPECT_EQ(bearer->param("service"), "c");
  const auto basic = find_challenge(all, "basic");
  ASSERT_TRUE(basic.has_value());
  EXPECT_EQ(basic->param("realm"), "a");
  EXPECT_FALSE(find_challenge(all, "negotiate").has_value());
  EXPECT_FALSE(find_challenge({}, "bearer").has_value());
}

}  // namespace
}  // namespace layercache::oci
