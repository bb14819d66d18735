#include "oci/reference.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <ostream>
#include <string>

namespace layercache::oci {
namespace {

const std::string d256 = "sha256:" + std::string(64, 'b');

struct name_case {
  std::string name;
  std::string input;
  bool valid;
  friend void PrintTo(const name_case& c, std::ostream* os) { *os << c.name; }
};

class repository_name : public testing::TestWithParam<name_case> {};

TEST_P(repository_name, validates) {
  EXPECT_EQ(is_valid_repository(GetParam().input), GetParam().valid) << GetParam().input;
}

INSTANTIATE_TEST_SUITE_P(
    table, repository_name,
    testing::Values(
        name_case{"simple", "alpine", true}, name_case{"two", "library/alpine", true},
        name_case{"deep", "a/b/c/d/e", true}, name_case{"dot", "a.b", true},
        name_case{"underscore", "a_b", true}, name_case{"double_underscore", "a__b", true},
        name_case{"dashes", "a---b", true}, name_case{"digits", "0/9", true},
        name_case{"mixed_separators", "a.b_c__d-e--f", true},
        name_case{"max_length", std::string(255, 'a'), true},
        name_case{"max_length_components", std::string(127, 'a') + "/" + std::string(127, 'b'),
                  true},
        name_case{"empty", "", false}, name_case{"too_long", std::string(256, 'a'), false},
        name_case{"uppercase", "Alpine", false}, name_case{"leading_slash", "/a", false},
        name_case{"trailing_slash", "a/", false}, name_case{"double_slash", "a//b", false},
        name_case{"dotdot", "a/../b", false}, name_case{"dotdot_inside", "a..b", false},
        name_case{"dotdot_alone", "..", false}, name_case{"dot_alone", ".", false},
        name_case{"triple_underscore", "a___b", false}, name_case{"leading_dash", "-a", false},
        name_case{"trailing_dash", "a-", false}, name_case{"leading_dot", ".a", false},
        name_case{"trailing_underscore", "a_", false}, name_case{"dot_dash", "a.-b", false},
        name_case{"percent", "a%2fb", false}, name_case{"colon", "a:b", false},
        name_case{"at", "a@b", false}, name_case{"space", "a b", false},
        name_case{"nul", std::string("a\0b", 3), false},
        name_case{"non_ascii", "caf\xc3\xa9", false}, name_case{"slash_only", "/", false},
        name_case{"hostile_separators", "a" + std::string(200, '-') + "b", true},
        name_case{"hostile_long_dashes", "a" + std::string(100000, '-') + "b", false}),
    [](const testing::TestParamInfo<name_case>& info) { return info.param.name; });

class tag_name : public testing::TestWithParam<name_case> {};

TEST_P(tag_name, validates) {
  EXPECT_EQ(is_valid_tag(GetParam().input), GetParam().valid) << GetParam().input;
}

INSTANTIATE_TEST_SUITE_P(
    table, tag_name,
    testing::Values(name_case{"latest", "latest", true}, name_case{"version", "v1.2.3-rc_1", true},
                    name_case{"upper", "ABC", true}, name_case{"underscore_first", "_x", true},
                    name_case{"single", "a", true}, name_case{"max", std::string(128, 'a'), true},
                    name_case{"empty", "", false},
                    name_case{"too_long", std::string(129, 'a'), false},
                    name_case{"dot_first", ".x", false}, name_case{"dash_first", "-x", false},
                    name_case{"slash", "a/b", false}, name_case{"colon", "a:b", false},
                    name_case{"plus", "a+b", false},
                    name_case{"nul", std::string("a\0", 2), false}),
    [](const testing::TestParamInfo<name_case>& info) { return info.param.name; });

class registry_name : public testing::TestWithParam<name_case> {};

TEST_P(registry_name, validates) {
  EXPECT_EQ(is_valid_registry(GetParam().input), GetParam().valid) << GetParam().input;
}

INSTANTIATE_TEST_SUITE_P(
    table, registry_name,
    testing::Values(
        name_case{"dns", "registry.example.com", true},
        name_case{"port", "registry.example.com:5000", true},
        name_case{"localhost", "localhost", true}, name_case{"upper", "Registry.Example.COM", true},
        name_case{"ipv4", "10.0.0.1:443", true}, name_case{"ipv6", "[::1]", true},
        name_case{"ipv6_port", "[::1]:5000", true},
        name_case{"ipv6_full", "[2001:db8::8:800:200c:417a]:443", true},
        name_case{"empty", "", false}, name_case{"empty_port", "host:", false},
        name_case{"port_zero", "host:0", false}, name_case{"port_too_big", "host:65536", false},
        name_case{"port_letters", "host:http", false}, name_case{"two_ports", "host:1:2", false},
        name_case{"leading_dash", "-host", false}, name_case{"trailing_dash", "host-.com", false},
        name_case{"empty_label", "a..b", false}, name_case{"underscore", "a_b.com", false},
        name_case{"ipv6_unclosed", "[::1", false}, name_case{"ipv6_garbage", "[zz::1]", false},
        name_case{"ipv6_empty", "[]", false}, name_case{"ipv6_zone", "[fe80::1%eth0]", false},
        name_case{"ipv6_trailing", "[::1]x", false},
        name_case{"too_long", std::string(256, 'a'), false}),
    [](const testing::TestParamInfo<name_case>& info) { return info.param.name; });

struct ref_case {
  std::string name;
  std::string input;
  std::optional<reference> expected;  // nullopt: must be rejected
  friend void PrintTo(const ref_case& c, std::ostream* os) { *os << c.name; }
};

reference ref(std::string registry, std::string repository, std::string tag,
              std::string digest = {}) {
  reference r{std::move(registry), std::move(repository), std::move(tag), std::nullopt};
  if (!digest.empty()) r.digest = digest::parse(digest);
  return r;
}

class reference_parse : public testing::TestWithParam<ref_case> {};

TEST_P(reference_parse, normalises) {
  const auto& c = GetParam();
  const auto got = reference::parse(c.input);
  ASSERT_EQ(got.has_value(), c.expected.has_value()) << c.input;
  if (!got) return;
  EXPECT_EQ(got->registry, c.expected->registry);
  EXPECT_EQ(got->repository, c.expected->repository);
  EXPECT_EQ(got->tag, c.expected->tag);
  EXPECT_EQ(got->digest, c.expected->digest);
  // str() is fully qualified and round-trips.
  EXPECT_EQ(reference::parse(got->str()), got) << got->str();
}

INSTANTIATE_TEST_SUITE_P(
    table, reference_parse,
    testing::Values(
        ref_case{"bare", "alpine", ref("docker.io", "library/alpine", "latest")},
        ref_case{"bare_tag", "alpine:3.19", ref("docker.io", "library/alpine", "3.19")},
        ref_case{"user_repo", "bitnami/redis", ref("docker.io", "bitnami/redis", "latest")},
        ref_case{"docker_io", "docker.io/alpine", ref("docker.io", "library/alpine", "latest")},
        ref_case{"index_docker_io", "index.docker.io/alpine",
                 ref("docker.io", "library/alpine", "latest")},
        ref_case{"docker_io_library", "docker.io/library/alpine:edge",
                 ref("docker.io", "library/alpine", "edge")},
        ref_case{"ghcr", "ghcr.io/owner/app:v1", ref("ghcr.io", "owner/app", "v1")},
        ref_case{"ghcr_single", "ghcr.io/app", ref("ghcr.io", "app", "latest")},
        ref_case{"localhost", "localhost/app", ref("localhost", "app", "latest")},
        ref_case{"localhost_port", "localhost:5000/app:1", ref("localhost:5000", "app", "1")},
        ref_case{"host_port", "reg:5000/a/b", ref("reg:5000", "a/b", "latest")},
        ref_case{"ipv6", "[::1]:5000/app:tag", ref("[::1]:5000", "app", "tag")},
        ref_case{"ipv6_no_port", "[::1]/app", ref("[::1]", "app", "latest")},
        ref_case{"digest_only", "alpine@" + d256, ref("docker.io", "library/alpine", "", d256)},
        ref_case{"tag_and_digest", "quay.io/a/b:1.0@" + d256, ref("quay.io", "a/b", "1.0", d256)},
        ref_case{"bare_with_port_like_tag", "localhost:5000",
                 ref("docker.io", "library/localhost", "5000")},
        ref_case{"deep_path", "r.io/a/b/c/d", ref("r.io", "a/b/c/d", "latest")},
        ref_case{"empty", "", std::nullopt}, ref_case{"uppercase_repo", "Alpine", std::nullopt},
        ref_case{"uppercase_first_component", "Foo/bar", std::nullopt},
        ref_case{"empty_tag", "alpine:", std::nullopt},
        ref_case{"bad_tag", "alpine:-x", std::nullopt},
        ref_case{"empty_digest", "alpine@", std::nullopt},
        ref_case{"bad_digest", "alpine@sha256:abc", std::nullopt},
        ref_case{"two_ats", "alpine@" + d256 + "@" + d256, std::nullopt},
        ref_case{"trailing_slash", "r.io/app/", std::nullopt},
        ref_case{"registry_only", "r.io/", std::nullopt},
        ref_case{"leading_slash", "/alpine", std::nullopt},
        ref_case{"dotdot", "r.io/a/../b", std::nullopt},
        ref_case{"percent", "r.io/a%2f..", std::nullopt},
        ref_case{"bad_port", "r.io:99999/a", std::nullopt},
        ref_case{"bad_registry", "-r.io/a", std::nullopt},
        ref_case{"space", "alpine latest", std::nullopt},
        ref_case{"nul", std::string("alp\0ine", 7), std::nullopt},
        ref_case{"name_too_long", "r.io/" + std::string(251, 'a'), std::nullopt},
        ref_case{"name_at_limit", "r.io/" + std::string(250, 'a'),
                 ref("r.io", std::string(250, 'a'), "latest")},
        // Found by fuzz/reference_fuzz.cpp: "docker.io/library/" + 247 bytes does not parse,
        // so neither may the short form (parse(str()) must round-trip).
        ref_case{"normalised_too_long", std::string(247, 'a'), std::nullopt},
        ref_case{"normalised_user_too_long", "u/" + std::string(245, 'a'), std::nullopt},
        ref_case{"normalised_at_limit", std::string(237, 'a'),
                 ref("docker.io", "library/" + std::string(237, 'a'), "latest")},
        ref_case{"overlong", std::string(100000, 'a'), std::nullopt},
        ref_case{"only_colon", ":", std::nullopt}, ref_case{"only_at", "@", std::nullopt}),
    [](const testing::TestParamInfo<ref_case>& info) { return info.param.name; });

TEST(reference, str_is_fully_qualified) {
  EXPECT_EQ(reference::parse("alpine")->str(), "docker.io/library/alpine:latest");
  EXPECT_EQ(reference::parse("r.io/a:1@" + d256)->str(), "r.io/a:1@" + d256);
  EXPECT_EQ(reference::parse("r.io/a@" + d256)->str(), "r.io/a@" + d256);
}

}  // namespace
}  // namespace layercache::oci
