// Manifests and tags from the chunk store, in front of a real docker-registry: by digest kept
// forever, tags revalidated after cache.tag_ttl, a stale tag served (flagged) while the
// upstream is down for up to cache.max_stale, and the accept class keeping an index away from a
// client that cannot take it. "No upstream request" is shown by stopping the upstream.
#include <gtest/gtest.h>

#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

const header_list kAcceptAll = {{"Accept", std::string(media_type::accept_all_manifests)}};
const header_list kAcceptDockerOnly = {{"Accept", std::string(media_type::docker_manifest)}};

class ManifestCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_ = std::make_unique<registry_process>();
    first_ = std::make_unique<image>(make_image(image_format::oci, {20'000}, 21));
    second_ = std::make_unique<image>(make_image(image_format::oci, {30'000}, 22));
    registry_pusher(upstream_->url()).push_image("m/app", "v1", *first_);
  }

  // A proxy whose cache section has `extra` lines (e.g. "  tag_ttl: 0s\n").
  void start_proxy(const std::string& extra) {
    proxy_.reset();
    proxy_ = std::make_unique<layercache_instance>(
        "cache:\n  path: " + (cache_dir_.path() / "store").string() + "\n" + extra +
        "upstreams:\n" + upstream_yaml("up", upstream_->url(), true));
  }

  std::string manifest_url(std::string_view ref) const {
    return proxy_->url() + "/v2/m/app/manifests/" + std::string(ref);
  }

  static void expect_manifest(const http_response& r, const blob& m) {
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(r.body, m.data);
    EXPECT_EQ(r.header("Content-Type"), m.media_type);
    EXPECT_EQ(r.header("Docker-Content-Digest"), m.digest.str());
    EXPECT_EQ(r.header("ETag"), "\"" + m.digest.str() + "\"");
    EXPECT_EQ(r.header("Content-Length"), std::to_string(m.data.size()));
  }

  temp_dir cache_dir_;
  std::unique_ptr<registry_process> upstream_;
  std::unique_ptr<image> first_;
  std::unique_ptr<image> second_;
  std::unique_ptr<layercache_instance> proxy_;
  http_client client_;
};

TEST_F(ManifestCacheTest, ByDigestServedFromStoreWithUpstreamDown) {
  start_proxy("");
  const auto& m = first_->manifest;
  expect_manifest(client_.get(manifest_url(m.digest.str()), kAcceptAll), m);

  upstream_->stop();
  expect_manifest(client_.get(manifest_url(m.digest.str()), kAcceptAll), m);
  // Whatever the client accepts: a digest names exactly these bytes.
  expect_manifest(client_.get(manifest_url(m.digest.str())), m);
  auto head = client_.head(manifest_url(m.digest.str()), kAcceptAll);
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.header("Docker-Content-Digest"), m.digest.str());
  EXPECT_EQ(head.header("Content-Length"), std::to_string(m.data.size()));
  EXPECT_EQ(head.header("Content-Type"), m.media_type);
  EXPECT_TRUE(head.body.empty());

  start_proxy("");  // kept across a restart
  expect_manifest(client_.get(manifest_url(m.digest.str()), kAcceptAll), m);
  EXPECT_FALSE(client_.get(manifest_url(m.digest.str()), kAcceptAll).header("X-Layercache-Stale"));
}

TEST_F(ManifestCacheTest, TagWithinTtlServedWithoutUpstream) {
  start_proxy("  tag_ttl: 1h\n");
  const auto& m = first_->manifest;
  expect_manifest(client_.get(manifest_url("v1"), kAcceptAll), m);

  upstream_->stop();
  auto r = client_.get(manifest_url("v1"), kAcceptAll);
  expect_manifest(r, m);
  EXPECT_FALSE(r.header("X-Layercache-Stale"));
  // The digest it resolved to is in the store too.
  expect_manifest(client_.get(manifest_url(m.digest.str()), kAcceptAll), m);
}

TEST_F(ManifestCacheTest, HeadByTagFromCache) {
  start_proxy("  tag_ttl: 1h\n");
  const auto& m = first_->manifest;
  expect_manifest(client_.get(manifest_url("v1"), kAcceptAll), m);

  upstream_->stop();
  auto h = client_.head(manifest_url("v1"), kAcceptAll);
  EXPECT_EQ(h.status, 200u);
  EXPECT_EQ(h.header("Docker-Content-Digest"), m.digest.str());
  EXPECT_EQ(h.header("Content-Length"), std::to_string(m.data.size()));
  EXPECT_EQ(h.header("Content-Type"), m.media_type);
  EXPECT_FALSE(h.header("X-Layercache-Stale"));
  EXPECT_TRUE(h.body.empty());
}

TEST_F(ManifestCacheTest, HeadByTagRemembersAManifestPulledByDigest) {
  // containerd's way: HEAD the tag, GET the digest, later HEAD the tag again.
  start_proxy("  tag_ttl: 1h\n");
  const auto& m = first_->manifest;
  auto cold = client_.head(manifest_url("v1"), kAcceptAll);
  EXPECT_EQ(cold.header("Docker-Content-Digest"), m.digest.str());
  expect_manifest(client_.get(manifest_url(m.digest.str()), kAcceptAll), m);
  auto resolve = client_.head(manifest_url("v1"), kAcceptAll);
  EXPECT_EQ(resolve.header("Docker-Content-Digest"), m.digest.str());

  upstream_->stop();
  auto h = client_.head(manifest_url("v1"), kAcceptAll);
  EXPECT_EQ(h.status, 200u);
  EXPECT_EQ(h.header("Docker-Content-Digest"), m.digest.str());
  EXPECT_EQ(h.header("Content-Length"), std::to_string(m.data.size()));
}

// A node's first pull (HEAD of the tag upstream, then GET by digest) leaves the tag recorded:
// the next start resolves it without the upstream (timetostart found every warm start paying
// an upstream HEAD).
TEST_F(ManifestCacheTest, AFirstPullsHeadThenGetLeavesTheTagRecorded) {
  start_proxy("  tag_ttl: 1h\n");
  const auto& m = first_->manifest;
  auto cold = client_.head(manifest_url("v1"), kAcceptAll);
  EXPECT_EQ(cold.header("Docker-Content-Digest"), m.digest.str());
  expect_manifest(client_.get(manifest_url(m.digest.str()), kAcceptAll), m);

  upstream_->stop();
  auto h = client_.head(manifest_url("v1"), kAcceptAll);
  EXPECT_EQ(h.status, 200u);
  EXPECT_EQ(h.header("Docker-Content-Digest"), m.digest.str());
  expect_manifest(client_.get(manifest_url("v1"), kAcceptAll), m);
}

TEST_F(ManifestCacheTest, StaleTagServedAndFlaggedWhenUpstreamDown) {
  start_proxy("  tag_ttl: 0s\n");
  const auto& m = first_->manifest;
  auto fresh = client_.get(manifest_url("v1"), kAcceptAll);
  expect_manifest(fresh, m);
  EXPECT_FALSE(fresh.header("X-Layercache-Stale"));
  // tag_ttl 0s: revalidated each time, the same digest: still not stale.
  auto revalidated = client_.get(manifest_url("v1"), kAcceptAll);
  expect_manifest(revalidated, m);
  EXPECT_FALSE(revalidated.header("X-Layercache-Stale"));

  upstream_->stop();
  auto stale = client_.get(manifest_url("v1"), kAcceptAll);
  expect_manifest(stale, m);
  EXPECT_EQ(stale.header("X-Layercache-Stale"), "true");
  auto head = client_.head(manifest_url("v1"), kAcceptAll);
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.header("X-Layercache-Stale"), "true");
  EXPECT_EQ(head.header("Docker-Content-Digest"), m.digest.str());

  upstream_->restart();
  auto back = client_.get(manifest_url("v1"), kAcceptAll);
  expect_manifest(back, m);
  EXPECT_FALSE(back.header("X-Layercache-Stale"));
}

TEST_F(ManifestCacheTest, NoStaleTagWhenMaxStaleIsZero) {
  start_proxy("  tag_ttl: 0s\n  max_stale: 0s\n");
  expect_manifest(client_.get(manifest_url("v1"), kAcceptAll), first_->manifest);

  upstream_->stop();
  auto r = client_.get(manifest_url("v1"), kAcceptAll);
  EXPECT_TRUE(r.status == 502u || r.status == 504u) << r.status;
  EXPECT_NE(r.body.find("UNAVAILABLE"), std::string::npos) << r.body;
  EXPECT_FALSE(r.header("X-Layercache-Stale"));
  // By digest is not a tag: still served.
  expect_manifest(client_.get(manifest_url(first_->manifest.digest.str()), kAcceptAll),
                  first_->manifest);
}

TEST_F(ManifestCacheTest, RetaggedUpstreamSeenAfterTtl) {
  start_proxy("  tag_ttl: 0s\n");
  expect_manifest(client_.get(manifest_url("v1"), kAcceptAll), first_->manifest);

  registry_pusher(upstream_->url()).push_image("m/app", "v1", *second_);
  expect_manifest(client_.get(manifest_url("v1"), kAcceptAll), second_->manifest);
  auto h = client_.head(manifest_url("v1"), kAcceptAll);
  EXPECT_EQ(h.header("Docker-Content-Digest"), second_->manifest.digest.str());

  upstream_->stop();
  // The old manifest is still there by digest; the tag now serves the new one (stale).
  expect_manifest(client_.get(manifest_url(first_->manifest.digest.str()), kAcceptAll),
                  first_->manifest);
  auto stale = client_.get(manifest_url("v1"), kAcceptAll);
  expect_manifest(stale, second_->manifest);
  EXPECT_EQ(stale.header("X-Layercache-Stale"), "true");
}

TEST_F(ManifestCacheTest, RetaggedToAManifestAlreadyStored) {
  // v2 points at a manifest the store already has (pulled by digest): revalidation by HEAD
  // finds it and serves it from the store.
  registry_pusher push(upstream_->url());
  push.push_image("m/app", "v2", *second_);
  start_proxy("  tag_ttl: 0s\n");
  expect_manifest(client_.get(manifest_url("v1"), kAcceptAll), first_->manifest);
  expect_manifest(client_.get(manifest_url(second_->manifest.digest.str()), kAcceptAll),
                  second_->manifest);
  push.push_manifest("m/app", "v1", second_->manifest);
  expect_manifest(client_.get(manifest_url("v1"), kAcceptAll), second_->manifest);
}

TEST_F(ManifestCacheTest, AcceptClassKeepsIndexFromSchema2OnlyClient) {
  const image arm = make_image(image_format::oci, {10'000}, 23, "arm64");
  const blob index = make_index(image_format::oci, {{first_.get(), "amd64"}, {&arm, "arm64"}});
  registry_pusher push(upstream_->url());
  push.push_image("m/app", "arm", arm);
  push.push_manifest("m/app", "multi", index);
  start_proxy("  tag_ttl: 1h\n");

  expect_manifest(client_.get(manifest_url("multi"), kAcceptAll), index);
  // A client taking only Docker schema 2 goes upstream (distribution refuses: 404), and never
  // gets the index cached for the other client.
  auto docker_only = client_.get(manifest_url("multi"), kAcceptDockerOnly);
  EXPECT_NE(docker_only.body, index.data);
  EXPECT_NE(docker_only.header("Content-Type"), std::string(media_type::oci_index));
  EXPECT_NE(docker_only.status, 200u) << docker_only.body;
  auto docker_head = client_.head(manifest_url("multi"), kAcceptDockerOnly);
  EXPECT_NE(docker_head.header("Docker-Content-Digest"), index.digest.str());

  upstream_->stop();
  expect_manifest(client_.get(manifest_url("multi"), kAcceptAll), index);
  // The same types in another order and case, with parameters, are the same class: served
  // from the store while the upstream is down.
  auto reordered =
      client_.get(manifest_url("multi"),
                  {{"Accept", "application/vnd.docker.distribution.manifest.list.v2+json"},
                   {"Accept", "Application/VND.OCI.image.index.v1+json; q=0.9"},
                   {"Accept",
                    "application/vnd.docker.distribution.manifest.v2+json, "
                    "application/vnd.oci.image.manifest.v1+json"}});
  expect_manifest(reordered, index);

  auto down = client_.get(manifest_url("multi"), kAcceptDockerOnly);
  EXPECT_NE(down.body, index.data);
  EXPECT_EQ(down.status, 502u);
}

TEST_F(ManifestCacheTest, DisabledCacheIsPassThrough) {
  start_proxy("  enabled: false\n  tag_ttl: 1h\n");
  const auto& m = first_->manifest;
  expect_manifest(client_.get(manifest_url("v1"), kAcceptAll), m);
  expect_manifest(client_.get(manifest_url(m.digest.str()), kAcceptAll), m);

  upstream_->stop();
  EXPECT_EQ(client_.get(manifest_url("v1"), kAcceptAll).status, 502u);
  EXPECT_EQ(client_.get(manifest_url(m.digest.str()), kAcceptAll).status, 502u);
}

}  // namespace
}  // namespace layercache::testing
