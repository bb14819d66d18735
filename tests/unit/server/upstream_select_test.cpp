#include "server/upstream_select.hpp"

#include <gtest/gtest.h>

namespace layercache::server {
namespace {

config::config make_config(bool with_default) {
  config::config c;
  config::upstream hub;
  hub.name = "docker.io";
  hub.url = "https://registry-1.docker.io";
  hub.scheme = "https";
  hub.host = "registry-1.docker.io";
  hub.port = 443;
  hub.is_default = with_default;
  hub.aliases = {"index.docker.io"};
  config::upstream ar;
  ar.name = "europe-docker.pkg.dev";
  ar.url = "https://europe-docker.pkg.dev";
  ar.scheme = "https";
  ar.host = "europe-docker.pkg.dev";
  ar.port = 443;
  config::upstream local;
  local.name = "local";
  local.url = "http://127.0.0.1:5001";
  local.scheme = "http";
  local.host = "127.0.0.1";
  local.port = 5001;
  c.upstreams = {hub, ar, local};
  return c;
}

struct select_case {
  std::string name;
  std::optional<std::string> ns;
  std::string upstream;    // expected upstream name, or "" for an error
  std::string repository;  // expected repository, or the error code
  unsigned status = 0;
};

class Select : public ::testing::TestWithParam<select_case> {};

TEST_P(Select, Chooses) {
  const auto cfg = make_config(true);
  const auto& c = GetParam();
  auto result = select_upstream(cfg, c.name, c.ns);
  if (c.upstream.empty()) {
    ASSERT_TRUE(std::holds_alternative<route_error>(result));
    EXPECT_EQ(std::get<route_error>(result).status, c.status);
    EXPECT_EQ(std::get<route_error>(result).code, c.repository);
    return;
  }
  ASSERT_TRUE(std::holds_alternative<upstream_choice>(result));
  const auto& choice = std::get<upstream_choice>(result);
  EXPECT_EQ(choice.upstream->name, c.upstream);
  EXPECT_EQ(choice.repository, c.repository);
}

INSTANTIATE_TEST_SUITE_P(
    Table, Select,
    ::testing::Values(
        select_case{"library/alpine", {}, "docker.io", "library/alpine"},
        select_case{"library/alpine", "docker.io", "docker.io", "library/alpine"},
        select_case{"library/alpine", "DOCKER.IO", "docker.io", "library/alpine"},
        select_case{"library/alpine", "index.docker.io", "docker.io", "library/alpine"},
        select_case{"library/alpine", "registry-1.docker.io", "docker.io", "library/alpine"},
        select_case{"library/alpine", "registry-1.docker.io:443", "docker.io", "library/alpine"},
        select_case{"p/r/img", "europe-docker.pkg.dev", "europe-docker.pkg.dev", "p/r/img"},
        select_case{"europe-docker.pkg.dev/p/r/img", {}, "europe-docker.pkg.dev", "p/r/img"},
        select_case{"local/team/app", {}, "local", "team/app"},
        select_case{"team/app", "127.0.0.1:5001", "local", "team/app"},
        // ns wins over a path prefix.
        select_case{"local/team/app", "docker.io", "docker.io", "local/team/app"},
        // The default upstream's name is no prefix: "docker.io/x" is a repository there.
        select_case{"docker.io/x", {}, "docker.io", "docker.io/x"},
        // A bare name equal to an upstream is a repository at the default upstream.
        select_case{"local", {}, "docker.io", "local"},
        // Never an open proxy: hosts that are not configured are refused, never dialled.
        select_case{"x", "evil.example.com", "", "DENIED", 403},
        select_case{"x", "127.0.0.1", "", "DENIED", 403},
        select_case{"x", "127.0.0.1:5002", "", "DENIED", 403},
        select_case{"x", "169.254.169.254", "", "DENIED", 403},
        select_case{"x", "metadata.google.internal", "", "DENIED", 403},
        select_case{"x", "", "", "DENIED", 403}));

TEST(Select, NoDefaultIsNameUnknown) {
  const auto cfg = make_config(false);
  auto result = select_upstream(cfg, "library/alpine", std::nullopt);
  ASSERT_TRUE(std::holds_alternative<route_error>(result));
  EXPECT_EQ(std::get<route_error>(result).status, 404u);
  EXPECT_EQ(std::get<route_error>(result).code, "NAME_UNKNOWN");
}

}  // namespace
}  // namespace layercache::server

namespace layercache::server {
namespace {

// An image reference as an operator writes it, resolved as a client's request for it would be.
struct image_case {
  std::string reference;
  std::string upstream;  // --upstream
  bool hub_default = true;
  std::string expected_upstream;  // "" for an error
  std::string repository;         // or the error code
  unsigned status = 0;
};

class SelectImage : public ::testing::TestWithParam<image_case> {};

TEST_P(SelectImage, GoesWhereAClientsRequestWould) {
  const auto& c = GetParam();
  auto cfg = make_config(c.hub_default);
  if (!c.hub_default) cfg.upstreams[2].is_default = true;  // "local" (127.0.0.1:5001)
  const auto result = select_image_upstream(cfg, c.reference, c.upstream);
  if (c.expected_upstream.empty()) {
    ASSERT_TRUE(std::holds_alternative<route_error>(result)) << c.reference;
    EXPECT_EQ(std::get<route_error>(result).code, c.repository);
    EXPECT_EQ(std::get<route_error>(result).status, c.status);
    return;
  }
  ASSERT_TRUE(std::holds_alternative<upstream_choice>(result))
      << c.reference << ": " << std::get<route_error>(result).message;
  EXPECT_EQ(std::get<upstream_choice>(result).upstream->name, c.expected_upstream);
  EXPECT_EQ(std::get<upstream_choice>(result).repository, c.repository);
}

INSTANTIATE_TEST_SUITE_P(
    References, SelectImage,
    ::testing::Values(
        // Short names go to the default upstream; "library/" only when that is Docker Hub.
        image_case{"alpine", "", true, "docker.io", "library/alpine"},
        image_case{"alpine:3.19", "", true, "docker.io", "library/alpine"},
        image_case{"team/app:v1", "", true, "docker.io", "team/app"},
        image_case{"alpine", "", false, "local", "alpine"},
        image_case{"team/app:v1", "", false, "local", "team/app"},
        image_case{"library/alpine", "", false, "local", "library/alpine"},
        image_case{"team/app@sha256:" + std::string(64, 'a'), "", false, "local", "team/app"},
        // A first component naming a non-default upstream selects it, prefix stripped.
        image_case{"europe-docker.pkg.dev/p/r/img:1", "", false, "europe-docker.pkg.dev",
                   "p/r/img"},
        image_case{"docker.io/alpine", "", false, "docker.io", "library/alpine"},
        image_case{"index.docker.io/team/app", "", false, "docker.io", "team/app"},
        image_case{"127.0.0.1:5001/team/app:v1", "", true, "local", "team/app"},
        // --upstream by name, alias or host; "library/" only for Hub.
        image_case{"alpine", "docker.io", false, "docker.io", "library/alpine"},
        image_case{"alpine", "local", true, "local", "alpine"},
        image_case{"team/app", "127.0.0.1:5001", true, "local", "team/app"},
        // Errors: an unknown --upstream, a registry not configured, no reference at all.
        image_case{"alpine", "nope", true, "", "NAME_UNKNOWN", 400},
        image_case{"quay.io/x/y", "", true, "", "DENIED", 403},
        image_case{"UPPER/case", "", true, "", "NAME_INVALID", 400}));

TEST(SelectImageUpstream, UnknownUpstreamNamesTheConfiguredOnes) {
  const auto result = select_image_upstream(make_config(true), "alpine", "nope");
  ASSERT_TRUE(std::holds_alternative<route_error>(result));
  EXPECT_EQ(std::get<route_error>(result).message,
            "no upstream is named nope (configured: docker.io, europe-docker.pkg.dev, local)");
}

TEST(SelectImageUpstream, DockerHubByNameAliasOrHost) {
  config::upstream u;
  u.name = "hub";
  u.host = "registry-1.docker.io";
  EXPECT_TRUE(is_docker_hub(u));
  u.host = "mirror.gcr.io";
  EXPECT_FALSE(is_docker_hub(u));
  u.aliases = {"docker.io"};
  EXPECT_TRUE(is_docker_hub(u));
}

}  // namespace
}  // namespace layercache::server
