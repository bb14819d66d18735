#include "server/route.hpp"

#include <gtest/gtest.h>

namespace layercache::server {
namespace {

const std::string kDigest = "sha256:" + std::string(64, 'a');

struct ok_case {
  std::string target;
  route_kind kind;
  std::string name;
  std::string reference;
  std::optional<std::string> ns;
};

class RouteOk : public ::testing::TestWithParam<ok_case> {};

TEST_P(RouteOk, Parses) {
  const auto& c = GetParam();
  auto parsed = parse_route(c.target);
  ASSERT_TRUE(std::holds_alternative<route>(parsed))
      << c.target << ": " << std::get<route_error>(parsed).message;
  const auto& r = std::get<route>(parsed);
  EXPECT_EQ(r.kind, c.kind);
  EXPECT_EQ(r.name, c.name);
  EXPECT_EQ(r.reference, c.reference);
  EXPECT_EQ(r.ns, c.ns);
}

INSTANTIATE_TEST_SUITE_P(
    Table, RouteOk,
    ::testing::Values(
        ok_case{"/v2/", route_kind::base, "", "", {}}, ok_case{"/v2", route_kind::base, "", "", {}},
        ok_case{"/v2/?ns=docker.io", route_kind::base, "", "", "docker.io"},
        ok_case{"/v2/library/alpine/manifests/3.19",
                route_kind::manifest,
                "library/alpine",
                "3.19",
                {}},
        ok_case{"/v2/a/b/c/manifests/" + kDigest, route_kind::manifest, "a/b/c", kDigest, {}},
        ok_case{"/v2/library/alpine/manifests/latest?ns=docker.io", route_kind::manifest,
                "library/alpine", "latest", "docker.io"},
        ok_case{"/v2/x/blobs/" + kDigest, route_kind::blob, "x", kDigest, {}},
        ok_case{"/v2/x/blobs/" + kDigest + "?ns=ghcr.io", route_kind::blob, "x", kDigest,
                "ghcr.io"},
        // A repository may itself contain a path component named like an endpoint.
        ok_case{"/v2/manifests/manifests/v1", route_kind::manifest, "manifests", "v1", {}},
        ok_case{"/v2/blobs/x/blobs/" + kDigest, route_kind::blob, "blobs/x", kDigest, {}},
        ok_case{"/v2/a/tags/list", route_kind::tags_list, "a", "", {}},
        ok_case{"/v2/a/b/tags/list?n=10&last=x", route_kind::tags_list, "a/b", "", {}},
        ok_case{"/v2/a/referrers/" + kDigest, route_kind::referrers, "a", kDigest, {}},
        ok_case{"/v2/europe-docker.pkg.dev/p/r/img/manifests/v1",
                route_kind::manifest,
                "europe-docker.pkg.dev/p/r/img",
                "v1",
                {}},
        ok_case{"/v2/?ns=docker%2eio", route_kind::base, "", "", "docker.io"}));

struct bad_case {
  std::string target;
  unsigned status;
  std::string code;
};

class RouteBad : public ::testing::TestWithParam<bad_case> {};

TEST_P(RouteBad, Refuses) {
  const auto& c = GetParam();
  auto parsed = parse_route(c.target);
  ASSERT_TRUE(std::holds_alternative<route_error>(parsed)) << c.target;
  const auto& e = std::get<route_error>(parsed);
  EXPECT_EQ(e.status, c.status) << c.target;
  EXPECT_EQ(e.code, c.code) << c.target;
}

INSTANTIATE_TEST_SUITE_P(
    Table, RouteBad,
    ::testing::Values(bad_case{"/", 404, "UNSUPPORTED"}, bad_case{"/v1/x", 404, "UNSUPPORTED"},
                      bad_case{"/v2/x/unknown/thing", 404, "UNSUPPORTED"},
                      bad_case{"/v2/UPPER/manifests/x", 400, "NAME_INVALID"},
                      bad_case{"/v2/a/../b/manifests/x", 400, "NAME_INVALID"},
                      bad_case{"/v2/a//b/manifests/x", 400, "NAME_INVALID"},
                      bad_case{"/v2/a%2fb/manifests/x", 400, "NAME_INVALID"},
                      bad_case{"/v2/" + std::string(300, 'a') + "/manifests/x", 400,
                               "NAME_INVALID"},
                      bad_case{"/v2/a/manifests/-bad", 404, "MANIFEST_UNKNOWN"},
                      bad_case{"/v2/a/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"},
                      bad_case{"/v2/a/manifests/" + std::string(129, 't'), 404, "MANIFEST_UNKNOWN"},
                      bad_case{"/v2/a/manifests/sha256:abc", 400, "DIGEST_INVALID"},
                      bad_case{"/v2/a/blobs/latest", 400, "DIGEST_INVALID"},
                      bad_case{"/v2/a/blobs/sha256:" + std::string(64, 'A'), 400, "DIGEST_INVALID"},
                      bad_case{"/v2/a/blobs/md5:0123", 400, "DIGEST_INVALID"},
                      bad_case{"/v2/a/referrers/latest", 400, "DIGEST_INVALID"},
                      bad_case{"/v2/a/blobs/uploads/", 405, "UNSUPPORTED"},
                      bad_case{"/v2/a/blobs/uploads/1234-5678", 405, "UNSUPPORTED"},
                      bad_case{"/v2/a/manifests/x?ns=a&ns=b", 400, "UNSUPPORTED"},
                      bad_case{"http://evil/v2/", 400, "UNSUPPORTED"},
                      bad_case{"", 400, "UNSUPPORTED"}));

TEST(OciErrorBody, EscapesJson) {
  EXPECT_EQ(oci_error_body("NAME_INVALID", "bad \"name\"\n\\"),
            R"({"errors":[{"code":"NAME_INVALID","message":"bad \"name\"\u000a\\"}]})");
}

}  // namespace
}  // namespace layercache::server
