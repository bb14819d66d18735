// Mirrors of an upstream (issue 21) with real parts on loopback: an origin docker-registry,
// layercaches as a zonal tier, docker-registry in proxy mode as a mirror, a tier that lies,
// and loops. Each pull checks every blob's bytes against its digest.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "registry/mirrors.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

// GETs of blob `d` the registry answered, from its access log.
std::size_t blob_gets(const registry_process& registry, const oci::digest& d) {
  const std::string log = registry.log();
  const std::string needle = "\"GET /v2/";
  std::size_t count = 0;
  for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) {
    const auto line_end = log.find('"', at + 1);
    if (line_end == std::string::npos) break;
    const std::string_view request(log.data() + at, line_end - at);
    if (request.find("/blobs/" + d.str()) != std::string_view::npos) ++count;
  }
  return count;
}

std::vector<const blob*> blobs_of(const image& img) {
  std::vector<const blob*> out{&img.config};
  for (const auto& l : img.layers) out.push_back(&l);
  return out;
}

class MirrorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    origin_ = new registry_process(registry_options{.access_log = true});
    // Ten layers: enough blobs for a tier of three to share.
    img_ = new image(make_image(image_format::oci,
                                {3 * MiB, 2 * MiB, 1 * MiB, 700 * KiB, 600 * KiB, 500 * KiB,
                                 400 * KiB, 300 * KiB, 200 * KiB, 100 * KiB},
                                2101));
    registry_pusher(origin_->url()).push_image("team/app", "v1", *img_);
    stores_ = new temp_dir();
  }
  static void TearDownTestSuite() {
    delete stores_;
    delete img_;
    delete origin_;
  }

  // A layercache in front of the origin: `upstream_extra` goes under its upstream entry.
  static std::unique_ptr<layercache_instance> layercache(std::string_view upstream_extra = {},
                                                         std::string_view server = {}) {
    static std::atomic<int> stores{0};
    std::string yaml(server);
    yaml += "log: {access: false}\ncache:\n  path: " +
            (stores_->path() / std::to_string(stores++)).string() +
            "\n  chunk_size: 256KiB\n  capacity: 1GiB\n"
            "prefetch: {eager_layers: never, fetch_published: false}\nupstreams:\n" +
            upstream_yaml("up", origin_->url(), true, upstream_extra);
    return std::make_unique<layercache_instance>(yaml);
  }
  static std::string mirrors_yaml(const std::vector<std::string>& urls,
                                  std::string_view select = "ordered") {
    std::string y = "    mirror_select: " + std::string(select) + "\n    mirrors:\n";
    for (const auto& u : urls) y += "      - url: " + u + "\n";
    return y;
  }

  // `n` layercaches in front of the origin, with no mirrors (a tier); their URLs in `urls`.
  static std::vector<std::unique_ptr<layercache_instance>> tier_of(int n,
                                                                   std::vector<std::string>& urls) {
    std::vector<std::unique_ptr<layercache_instance>> tier;
    for (int k = 0; k < n; ++k) {
      tier.push_back(layercache());
      urls.push_back(tier.back()->url());
    }
    return tier;
  }

  // Pulls the image through `proxy`: the manifest by tag, then every blob whole; each checked.
  static void pull(const layercache_instance& proxy) {
    http_client client;
    const auto m = client.get(proxy.url() + "/v2/team/app/manifests/v1",
                              {{"Accept", "application/vnd.oci.image.manifest.v1+json"}});
    ASSERT_EQ(m.status, 200u) << m.body;
    EXPECT_TRUE(m.body == img_->manifest.data);
    for (const blob* b : blobs_of(*img_)) {
      const auto r = client.get(proxy.url() + "/v2/team/app/blobs/" + b->digest.str());
      ASSERT_EQ(r.status, 200u) << b->digest.str();
      EXPECT_TRUE(r.body == b->data) << "wrong bytes for " << b->digest.str();
    }
  }

  static registry_process* origin_;
  static image* img_;
  static temp_dir* stores_;  // every instance's store, each in a directory of its own
};

registry_process* MirrorTest::origin_ = nullptr;
image* MirrorTest::img_ = nullptr;
temp_dir* MirrorTest::stores_ = nullptr;

// (1) A second layercache as the zonal mirror: the node's blobs come from it; the tier fills
// each from the origin once; a second node pulls from the tier with no origin blob GET.
TEST_F(MirrorTest, ALayercacheTierServesANodesBlobs) {
  auto tier = layercache();
  auto node = layercache(mirrors_yaml({tier->url()}));
  const std::size_t before = blob_gets(*origin_, img_->layers[0].digest);
  pull(*node);
  EXPECT_GT(node->metric("layercache_mirror_requests_total", {{"outcome", "served"}}), 0);
  EXPECT_EQ(node->metric("layercache_mirror_requests_total", {{"outcome", "fallback"}}), 0);
  EXPECT_GT(tier->metric("layercache_cache_blobs"), 0);
  const std::size_t tier_gets = blob_gets(*origin_, img_->layers[0].digest) - before;
  EXPECT_GE(tier_gets, 1u);

  auto second = layercache(mirrors_yaml({tier->url()}));
  pull(*second);
  EXPECT_EQ(blob_gets(*origin_, img_->layers[0].digest) - before, tier_gets)
      << "the second node's blobs came from the origin, not the tier";
}

// A tier as deploy/tier sets it up: client_auth on the tier, the node presenting its token as
// the mirror's Basic password (the tier's own challenge asks for it); a node without the token
// is refused by the tier and pulls from the origin instead.
TEST_F(MirrorTest, ATierWithClientAuthServesNodesThatPresentItsToken) {
  const auto token = stores_->path() / "tier-token";
  write_file(token, "tier-secret\n", 0600);
  const std::string listen =
      "server:\n  threads: 2\n  listen:\n    - address: 127.0.0.1:0\n  client_auth:\n"
      "    token_file: " +
      token.string() + "\n";
  auto tier = layercache({}, listen);
  auto node = layercache(
      "    mirrors:\n      - url: " + tier->url() +
      "\n        auth: {type: basic, username: node, password_file: " + token.string() + "}\n");
  pull(*node);
  EXPECT_GT(node->metric("layercache_mirror_requests_total", {{"outcome", "served"}}), 0);
  EXPECT_EQ(node->metric("layercache_mirror_requests_total", {{"outcome", "fallback"}}), 0);

  auto stranger = layercache(mirrors_yaml({tier->url()}));
  pull(*stranger);  // from the origin: the tier answers 401 to a node without its token
  EXPECT_EQ(stranger->metric("layercache_mirror_requests_total", {{"outcome", "served"}}), 0);
  EXPECT_GT(stranger->metric("layercache_mirror_requests_total",
                             {{"outcome", "fallback"}, {"reason", "status"}}),
            0);
}

// (2) docker-registry in proxy mode (a pull-through cache of the origin) as the mirror.
TEST_F(MirrorTest, ARegistryInProxyModeServesANodesBlobs) {
  registry_process proxy_registry(registry_options{.proxy_remote_url = origin_->url()});
  auto node = layercache(mirrors_yaml({proxy_registry.url()}));
  pull(*node);
  EXPECT_GT(node->metric("layercache_mirror_requests_total", {{"outcome", "served"}}), 0);
  EXPECT_EQ(node->metric("layercache_mirror_requests_total", {{"outcome", "fallback"}}), 0);
}

// (3) A tier of three with `select: hash` in front of one origin, and five nodes pulling at
// once: every blob is held by the tier member rendezvous hashing names its owner, by it alone,
// and the origin served each blob's bytes to the tier once.
TEST_F(MirrorTest, AHashedTierSharesTheBlobsAndTheOriginServesEachOnce) {
  std::vector<std::string> urls;
  auto tier = tier_of(3, urls);
  std::vector<std::unique_ptr<layercache_instance>> nodes;
  nodes.reserve(5);
  for (int n = 0; n < 5; ++n) nodes.push_back(layercache(mirrors_yaml(urls, "hash")));
  std::vector<std::thread> pulls;
  pulls.reserve(nodes.size());
  for (auto& node : nodes) pulls.emplace_back([&node] { pull(*node); });
  for (auto& t : pulls) t.join();

  std::vector<std::size_t> owned(3, 0);
  std::uint64_t bytes = 0;
  for (const blob* b : blobs_of(*img_)) {
    ++owned[registry::rendezvous_order(urls, b->digest.str()).front()];
    bytes += b->data.size();
  }
  double received = 0;
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(tier[k]->metric("layercache_cache_blobs"), static_cast<double>(owned[k])) << k;
    received += tier[k]->metric("layercache_upstream_received_bytes_total");
  }
  // Blob bytes once, plus what is not a blob (manifests, size probes): a few KiB.
  EXPECT_GE(received, static_cast<double>(bytes));
  EXPECT_LT(received, static_cast<double>(bytes) + 64 * KiB);
  for (auto& node : nodes) {
    EXPECT_EQ(node->metric("layercache_mirror_requests_total", {{"outcome", "fallback"}}), 0);
  }
}

// (4) A tier member that goes away mid-pull: the nodes' pulls complete, bytes checked, through
// the next member or the origin.
TEST_F(MirrorTest, ATierMemberThatGoesAwayCostsNoPull) {
  std::vector<std::string> urls;
  auto tier = tier_of(3, urls);
  const auto& big = img_->layers[0];
  const std::size_t owner = registry::rendezvous_order(urls, big.digest.str()).front();
  auto node = layercache(mirrors_yaml(urls, "hash"));
  http_client client;
  // Part of the big layer through its owner, then the owner goes.
  const auto part = client.get(node->url() + "/v2/team/app/blobs/" + big.digest.str(),
                               {{"Range", "bytes=0-99999"}});
  ASSERT_EQ(part.status, 206u);
  EXPECT_TRUE(part.body == big.data.substr(0, 100000));
  std::thread stopper([&] { tier[owner]->stop(); });
  pull(*node);
  stopper.join();
  tier[owner].reset();
  auto fresh = layercache(mirrors_yaml(urls, "hash"));  // a fresh node, the member gone
  pull(*fresh);
  // The gone member's blobs were asked of it and passed over (not served by it).
  EXPECT_GT(fresh->metric("layercache_mirror_requests_total",
                          {{"outcome", "fallback"}, {"reason", "transport"}}),
            0);
}

// (5) A mirror that sends wrong bytes (right lengths): the node's check of the whole blob
// fails, the blob is purged and distrusted, the mirror's breaker opens, and the next read
// comes from the origin, right.
TEST_F(MirrorTest, AMirrorThatLiesIsCaughtAndTheBlobComesFromTheOrigin) {
  const auto& layer = img_->layers[2];
  http_stub liar([&layer](const stub_request& r) {
    auto a = ranged_answer(std::string(layer.data.size(), 'x'), r);  // right lengths
    if (r.method == "HEAD") a.status = 200;
    return a;
  });
  auto node = layercache(mirrors_yaml({liar.url()}));
  http_client client;
  const std::string url = node->url() + "/v2/team/app/blobs/" + layer.digest.str();
  // The first read streams what arrives and cannot end as verified: the connection is cut
  // before its last byte (blob_handler), so no client takes the mirror's bytes for the blob.
  EXPECT_THROW((void)client.get(url), std::runtime_error);
  const auto second = client.get(url);
  ASSERT_EQ(second.status, 200u);
  EXPECT_TRUE(second.body == layer.data);
  EXPECT_EQ(node->metric("layercache_mirror_requests_total",
                         {{"outcome", "fallback"}, {"reason", "digest"}}),
            1);
  EXPECT_EQ(node->metric("layercache_mirror_breaker_open"), 1);
  EXPECT_GE(blob_gets(*origin_, layer.digest), 1u);
}

// (6) Loops: a layercache that is its own mirror refuses the request it sent itself (508)
// and pulls from the origin; two that name each other never bounce a request: the one asked
// second goes to the origin, not back.
TEST_F(MirrorTest, LoopsAreRefusedNotFollowed) {
  const std::uint16_t port = free_port();
  const std::string self = "http://127.0.0.1:" + std::to_string(port);
  auto node = layercache(mirrors_yaml({self}),
                         "server:\n  threads: 2\n  listen:\n    - address: "
                         "127.0.0.1:" +
                             std::to_string(port) + "\n");
  pull(*node);
  EXPECT_GT(node->metric("layercache_mirror_requests_total",
                         {{"outcome", "fallback"}, {"reason", "loop"}}),
            0);

  const std::uint16_t pa = free_port();
  const std::uint16_t pb = free_port();
  const auto listen = [](std::uint16_t p) {
    return "server:\n  threads: 2\n  listen:\n    - address: 127.0.0.1:" + std::to_string(p) + "\n";
  };
  auto a = layercache(mirrors_yaml({"http://127.0.0.1:" + std::to_string(pb)}), listen(pa));
  auto b = layercache(mirrors_yaml({"http://127.0.0.1:" + std::to_string(pa)}), listen(pb));
  pull(*a);
  EXPECT_GT(a->metric("layercache_mirror_requests_total", {{"outcome", "served"}}), 0);
  EXPECT_EQ(b->metric("layercache_mirror_requests_total"), 0) << "b sent a's request back to a";
}

}  // namespace
}  // namespace layercache::testing
