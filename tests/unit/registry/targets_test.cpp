#include "registry/targets.hpp"

#include <gtest/gtest.h>

namespace layercache::registry {
namespace {

TEST(Targets, BlobAndManifestPaths) {
  EXPECT_EQ(blob_target("library/alpine", "sha256:abc"), "/v2/library/alpine/blobs/sha256:abc");
  EXPECT_EQ(manifest_target("team/app", "v1"), "/v2/team/app/manifests/v1");
  EXPECT_EQ(manifest_target("a", "sha256:0f"), "/v2/a/manifests/sha256:0f");
}

}  // namespace
}  // namespace layercache::registry
