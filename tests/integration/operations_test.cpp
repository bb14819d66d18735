// The operations listener against a real docker-registry upstream: /metrics after a known
// sequence of requests, health, and the admin API (stats, list, purge, preload — async with
// its progress —, resolve, token).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <thread>

#include "tests/support/exposition.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

// State-changing admin calls say JSON, as layercachectl does (issue 25).
const header_list kJson = {{"Content-Type", "application/json"}};

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

std::string text(const boost::json::value& v) { return std::string(v.as_string()); }

boost::json::object json_of(const http_response& r) {
  return boost::json::parse(r.body).as_object();
}

class OperationsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_ = std::make_unique<registry_process>();
    img_ = std::make_unique<image>(make_image(image_format::oci, {3 * MiB + 777, 300 * KiB}, 5));
    registry_pusher(upstream_->url()).push_image("ops/app", "v1", *img_);
  }

  void start_proxy(const std::string& admin_yaml = {}) {
    proxy_.reset();
    // No eager prefetch, no profile lookups upstream: the sequences below count exact requests.
    proxy_ = std::make_unique<layercache_instance>(
        admin_yaml +
        "prefetch:\n  eager_layers: never\n  fetch_published: false\ncache:\n  path: " +
        (cache_dir_.path() / "store").string() +
        "\n  chunk_size: 256KiB\n  capacity: 1GiB\n  complete_partial: false\nupstreams:\n" +
        upstream_yaml("up", upstream_->url(), true));
  }

  std::string admin(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(proxy_->srv().admin_port()) + std::string(path);
  }
  std::string blob_url(const blob& b) const {
    return proxy_->url() + "/v2/ops/app/blobs/" + b.digest.str();
  }
  std::vector<metric_sample> scrape() {
    const auto r = client_.get(admin("/metrics"));
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    return parse_exposition(r.body);
  }

  temp_dir cache_dir_;
  std::unique_ptr<registry_process> upstream_;
  std::unique_ptr<image> img_;
  std::unique_ptr<layercache_instance> proxy_;
  http_client client_;
};

TEST_F(OperationsTest, MetricsCountAKnownSequenceOfRequests) {
  start_proxy();
  const auto& layer = img_->layers[0];
  const std::string manifest_url = proxy_->url() + "/v2/ops/app/manifests/v1";
  const header_list accept = {{"Accept", "application/vnd.oci.image.manifest.v1+json"}};

  const auto before = scrape();
  EXPECT_EQ(metric_value(before, "layercache_http_request_duration_seconds_count"), 0);

  ASSERT_EQ(client_.get(manifest_url, accept).status, 200u);  // miss
  ASSERT_EQ(client_.get(manifest_url, accept).status, 200u);  // hit (within tag_ttl)
  auto cold = client_.get(blob_url(layer));                   // miss
  ASSERT_EQ(cold.status, 200u);
  ASSERT_TRUE(cold.body == layer.data);
  auto warm = client_.get(blob_url(layer));  // hit
  ASSERT_TRUE(warm.body == layer.data);
  auto part = client_.get(blob_url(layer), {{"Range", "bytes=10-1009"}});  // hit, 206
  ASSERT_EQ(part.status, 206u);
  ASSERT_EQ(client_.get(proxy_->url() + "/v2/").status, 200u);                         // local
  ASSERT_EQ(client_.get(proxy_->url() + "/v2/ops/app/blobs/sha256:zz").status, 400u);  // local
  const auto nope = client_.get(proxy_->url() + "/v2/ops/app/manifests/nope", accept);
  ASSERT_EQ(nope.status, 404u);

  const auto m = scrape();
  const std::string d = "layercache_http_request_duration_seconds_count";
  auto count = [&](const char* route, const char* source, const char* code) {
    return metric_value(m, d, {{"route", route}, {"source", source}, {"code", code}});
  };
  EXPECT_EQ(count("manifest", "miss", "2xx"), 1);
  EXPECT_EQ(count("manifest", "hit", "2xx"), 1);
  EXPECT_EQ(count("blob", "miss", "2xx"), 1);
  EXPECT_EQ(count("blob", "hit", "2xx"), 2);
  EXPECT_EQ(count("base", "local", "2xx"), 1);
  EXPECT_EQ(count("other", "local", "4xx"), 1);  // the digest did not parse: no route
  EXPECT_EQ(count("manifest", "miss", "4xx"), 1);
  EXPECT_EQ(metric_value(m, d), 8);
  EXPECT_EQ(metric_value(m, "layercache_http_time_to_first_byte_seconds_count"), 8);

  const double size = static_cast<double>(layer.data.size());
  const double manifest_size = static_cast<double>(img_->manifest.data.size());
  const std::string bytes = "layercache_http_response_bytes_total";
  // The 404's error body came from upstream too.
  EXPECT_EQ(metric_value(m, bytes, {{"source", "miss"}}),
            size + manifest_size + static_cast<double>(nope.body.size()));
  EXPECT_EQ(metric_value(m, bytes, {{"source", "hit"}}), size + manifest_size + 1000);
  EXPECT_EQ(metric_value(m, bytes, {{"source", "joined"}}), 0);

  // Upstream: the manifest GET, the blob HEAD and the blob's range GETs (plus the 404).
  EXPECT_GE(metric_value(m, "layercache_upstream_received_bytes_total", {{"upstream", "up"}}),
            size + manifest_size);
  EXPECT_GE(metric_value(m, "layercache_upstream_request_duration_seconds_count",
                         {{"upstream", "up"}, {"outcome", "2xx"}}),
            3);
  EXPECT_EQ(metric_value(m, "layercache_upstream_request_duration_seconds_count",
                         {{"upstream", "up"}, {"outcome", "4xx"}}),
            1);

  // The store: one blob of 13 chunks of 256 KiB, filled once, then read twice from the store.
  const double chunks = std::ceil(size / (256 * KiB));
  EXPECT_EQ(metric_value(m, "layercache_cache_blobs"), 1);
  EXPECT_EQ(metric_value(m, "layercache_cache_chunks"), chunks);
  EXPECT_EQ(metric_value(m, "layercache_cache_used_bytes"), size);
  EXPECT_EQ(metric_value(m, "layercache_cache_capacity_bytes"), 1024.0 * MiB);
  EXPECT_EQ(metric_value(m, "layercache_cache_chunk_reads_total", {{"source", "filled"}}), chunks);
  // The warm read and the range (a cold read may also find its own fills stored already).
  EXPECT_GE(metric_value(m, "layercache_cache_chunk_reads_total", {{"source", "store"}}),
            chunks + 1);
  EXPECT_EQ(metric_value(m, "layercache_cache_fills_in_flight"), 0);
  EXPECT_EQ(metric_value(m, "layercache_digest_failures_total"), 0);
  EXPECT_EQ(metric_value(m, "layercache_build_info"), 1);
  EXPECT_GT(metric_value(m, "process_resident_memory_bytes"), 0);

  const auto lint = promtool_check_metrics(client_.get(admin("/metrics")).body);
  EXPECT_TRUE(lint.ok) << lint.output;
}

TEST_F(OperationsTest, HealthAndReadiness) {
  start_proxy();
  const auto health = client_.get(admin("/healthz"));
  EXPECT_EQ(health.status, 200u);
  EXPECT_EQ(json_of(health).at("status"), "ok");
  const auto ready = client_.get(admin("/readyz"));
  EXPECT_EQ(ready.status, 200u);
  EXPECT_EQ(json_of(ready).at("status"), "ready");
  EXPECT_EQ(client_.request("POST", admin("/healthz")).status, 405u);
  EXPECT_EQ(client_.get(admin("/nowhere")).status, 404u);
}

TEST_F(OperationsTest, AdminStatsListAndPurge) {
  start_proxy();
  const auto& big = img_->layers[0];
  const auto& small = img_->layers[1];
  ASSERT_EQ(client_.get(blob_url(big)).status, 200u);
  ASSERT_EQ(client_.get(blob_url(small)).status, 200u);

  auto stats = json_of(client_.get(admin("/admin/stats")));
  EXPECT_EQ(stats.at("store").at("blobs"), 2);
  EXPECT_EQ(stats.at("store").at("verified_blobs"), 2);
  EXPECT_EQ(stats.at("store").at("used_bytes").to_number<double>(),
            static_cast<double>(big.data.size() + small.data.size()));
  EXPECT_EQ(stats.at("upstreams").as_array().at(0).at("name"), "up");

  auto listed = json_of(client_.get(admin("/admin/blobs")));
  ASSERT_EQ(listed.at("total"), 2);
  EXPECT_EQ(text(listed.at("blobs").as_array().at(0).at("digest")),
            small.digest.str());  // most recent
  EXPECT_EQ(listed.at("blobs").as_array().at(1).at("size").to_number<double>(),
            static_cast<double>(big.data.size()));
  EXPECT_EQ(json_of(client_.get(admin("/admin/blobs?limit=1"))).at("blobs").as_array().size(), 1u);
  EXPECT_EQ(client_.get(admin("/admin/blobs?limit=x")).status, 400u);

  const auto purged = client_.request("DELETE", admin("/admin/blobs/" + big.digest.str()), kJson);
  EXPECT_EQ(purged.status, 200u) << purged.body;
  EXPECT_EQ(text(json_of(purged).at("purged")), big.digest.str());
  EXPECT_EQ(client_.request("DELETE", admin("/admin/blobs/" + big.digest.str()), kJson).status,
            404u);
  EXPECT_EQ(client_.request("DELETE", admin("/admin/blobs/sha256:nothex"), kJson).status, 400u);
  EXPECT_EQ(client_.request("POST", admin("/admin/blobs/" + big.digest.str()), kJson).status, 405u);
  listed = json_of(client_.get(admin("/admin/blobs")));
  ASSERT_EQ(listed.at("total"), 1);

  // Purged bytes come back from upstream, whole and right.
  const auto again = client_.get(blob_url(big));
  ASSERT_EQ(again.status, 200u);
  EXPECT_TRUE(again.body == big.data);

  const auto all = client_.request("DELETE", admin("/admin/blobs"), kJson);
  EXPECT_EQ(all.status, 200u);
  EXPECT_EQ(json_of(all).at("purged_blobs"), 2);
  stats = json_of(client_.get(admin("/admin/stats")));
  EXPECT_EQ(stats.at("store").at("blobs"), 0);
  EXPECT_EQ(stats.at("store").at("used_bytes"), 0);
}

TEST_F(OperationsTest, PreloadWarmsAnImageSoItServesWithTheUpstreamGone) {
  // An index for two platforms: only the asked-for platform's blobs are fetched.
  const auto arm = make_image(image_format::oci, {700 * KiB}, 77, "arm64");
  registry_pusher pusher(upstream_->url());
  pusher.push_image("ops/app", "arm-only", arm);
  const auto index = make_index(image_format::oci, {{img_.get(), "amd64"}, {&arm, "arm64"}});
  pusher.push_manifest("ops/app", "multi", index);
  start_proxy();

  const std::string body = R"({"reference": ")" + upstream_->url().substr(7) +
                           R"(/ops/app:multi", "platform": "linux/arm64"})";
  const auto r = client_.request("POST", admin("/admin/preload"), kJson, body);
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto result = json_of(r);
  EXPECT_EQ(text(result.at("digest")), index.digest.str());
  EXPECT_EQ(result.at("upstream"), "up");
  EXPECT_EQ(result.at("manifests"), 2);  // the index and the arm64 manifest
  EXPECT_EQ(result.at("blobs"), 2);      // config and one layer
  EXPECT_EQ(result.at("bytes").to_number<double>(),
            static_cast<double>(arm.config.data.size() + arm.layers[0].data.size()));
  auto listed = json_of(client_.get(admin("/admin/blobs")));
  EXPECT_EQ(listed.at("total"), 2);

  // Now amd64 by name of the upstream, then everything with the upstream stopped.
  const auto amd = client_.request("POST", admin("/admin/preload"), kJson,
                                   R"({"reference": "ops/app:multi", "upstream": "up"})");
  ASSERT_EQ(amd.status, 200u) << amd.body;
  EXPECT_EQ(json_of(amd).at("blobs"), 3);
  upstream_->stop();
  const std::vector<const blob*> all = {&img_->layers[0], &img_->layers[1], &img_->config,
                                        &arm.layers[0]};
  for (const blob* b : all) {
    const auto got = client_.get(blob_url(*b));
    ASSERT_EQ(got.status, 200u);
    EXPECT_TRUE(got.body == b->data);
  }
  const auto by_digest =
      client_.get(proxy_->url() + "/v2/ops/app/manifests/" + arm.manifest.digest.str(),
                  {{"Accept", "application/vnd.oci.image.manifest.v1+json"}});
  ASSERT_EQ(by_digest.status, 200u);
  EXPECT_EQ(by_digest.body, arm.manifest.data);
}

TEST_F(OperationsTest, PreloadErrorsAreClear) {
  start_proxy();
  auto post = [&](const std::string& body) {
    return client_.request("POST", admin("/admin/preload"), kJson, body);
  };
  EXPECT_EQ(post("not json").status, 400u);
  EXPECT_EQ(post(R"({"reference": 5})").status, 400u);
  EXPECT_EQ(post(R"({"reference": "UPPER/Case"})").status, 400u);
  const auto foreign = post(R"({"reference": "quay.io/some/image:1"})");
  EXPECT_EQ(foreign.status, 403u) << foreign.body;  // not a configured upstream: never dialled
  const auto missing = post(R"({"reference": "ops/app:nope", "upstream": "up"})");
  EXPECT_EQ(missing.status, 404u) << missing.body;
  EXPECT_NE(json_of(missing).at("error").as_string().find("nope"), std::string::npos);
  const auto platform =
      post(R"({"reference": "ops/app:v1", "upstream": "up", "platform": "linux/s390x"})");
  EXPECT_EQ(platform.status, 200u) << platform.body;  // not an index: the platform is moot
  EXPECT_EQ(client_.get(admin("/admin/preload")).status, 405u);
}

// POST /admin/preload with "async": 202 and an id at once; GET /admin/preload/<id> reports
// its progress until it ended with the totals. GET /admin/resolve names a platform's manifest.
TEST_F(OperationsTest, AsyncPreloadReportsProgressAndResolveNamesThePlatformsManifest) {
  const auto arm = make_image(image_format::oci, {700 * KiB}, 77, "arm64");
  registry_pusher pusher(upstream_->url());
  pusher.push_image("ops/app", "arm-only", arm);
  const auto index = make_index(image_format::oci, {{img_.get(), "amd64"}, {&arm, "arm64"}});
  pusher.push_manifest("ops/app", "multi", index);
  start_proxy();

  const auto started = client_.request("POST", admin("/admin/preload"), kJson,
                                       R"({"reference": "ops/app:v1", "async": true})");
  ASSERT_EQ(started.status, 202u) << started.body;
  const std::string id = text(json_of(started).at("id"));
  EXPECT_EQ(started.header("Location"), "/admin/preload/" + id);
  EXPECT_EQ(json_of(started).at("upstream"), "up");  // a short name: the default upstream
  boost::json::object status;
  for (int polls = 0; polls < 600; ++polls) {
    const auto r = client_.get(admin("/admin/preload/" + id));
    ASSERT_EQ(r.status, 200u) << r.body;
    status = json_of(r);
    if (status.at("state") != "running") break;
    const auto bytes = status.at("bytes").to_number<std::uint64_t>();
    if (status.at("listed").as_bool()) {
      EXPECT_LE(bytes, status.at("bytes_total").to_number<std::uint64_t>());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(status.at("state"), "done") << boost::json::serialize(status);
  const std::uint64_t total =
      img_->config.data.size() + img_->layers[0].data.size() + img_->layers[1].data.size();
  EXPECT_EQ(status.at("blobs"), 3);
  EXPECT_EQ(status.at("blobs_total"), 3);
  EXPECT_EQ(status.at("bytes").to_number<std::uint64_t>(), total);
  EXPECT_EQ(status.at("bytes_total").to_number<std::uint64_t>(), total);
  EXPECT_EQ(text(status.at("digest")), img_->manifest.digest.str());
  EXPECT_EQ(client_.get(admin("/admin/preload/0123456789abcdef")).status, 404u);

  // A failure is the job's state, with the status the synchronous answer would have had.
  const auto bad = client_.request("POST", admin("/admin/preload"), kJson,
                                   R"({"reference": "ops/app:nope", "async": true})");
  ASSERT_EQ(bad.status, 202u) << bad.body;
  const std::string bad_id = text(json_of(bad).at("id"));
  for (int polls = 0; polls < 600; ++polls) {
    status = json_of(client_.get(admin("/admin/preload/" + bad_id)));
    if (status.at("state") != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(status.at("state"), "failed");
  EXPECT_EQ(status.at("status"), 404);
  EXPECT_NE(text(status.at("error")).find("nope"), std::string::npos);
  // An upstream no one configured is refused before any job starts.
  EXPECT_EQ(client_
                .request("POST", admin("/admin/preload"), kJson,
                         R"({"reference": "quay.io/x/y", "async": true})")
                .status,
            403u);

  const auto resolved =
      client_.get(admin("/admin/resolve?reference=ops/app:multi&platform=linux/arm64"));
  ASSERT_EQ(resolved.status, 200u) << resolved.body;
  EXPECT_EQ(text(json_of(resolved).at("digest")), arm.manifest.digest.str());
  EXPECT_EQ(text(json_of(resolved).at("index")), index.digest.str());
  EXPECT_EQ(client_.get(admin("/admin/resolve?reference=ops/app:multi&platform=all")).status, 400u);
  EXPECT_EQ(client_.get(admin("/admin/resolve?reference=ops/app:nope")).status, 404u);
  EXPECT_EQ(client_.get(admin("/admin/resolve")).status, 400u);
  const auto single = client_.get(admin("/admin/resolve?reference=ops/app%3Av1&upstream=up"));
  ASSERT_EQ(single.status, 200u) << single.body;
  EXPECT_EQ(text(json_of(single).at("digest")), img_->manifest.digest.str());
  EXPECT_FALSE(json_of(single).contains("index"));
}

TEST_F(OperationsTest, AdminTokenGuardsTheAdminApiButNotMetrics) {
  const auto token_file = cache_dir_.path() / "admin-token";
  write_file(token_file, "s3cret-token\n", 0600);
  start_proxy("admin:\n  address: 127.0.0.1:0\n  token_file: " + token_file.string() + "\n");
  const auto none = client_.get(admin("/admin/stats"));
  EXPECT_EQ(none.status, 401u);
  EXPECT_EQ(none.header("WWW-Authenticate"), "Bearer realm=\"layercache-admin\"");
  EXPECT_EQ(client_.get(admin("/admin/stats"), {{"Authorization", "Bearer s3cret-tokeN"}}).status,
            401u);
  EXPECT_EQ(client_.get(admin("/admin/stats"), {{"Authorization", "Bearer s3cret-token"}}).status,
            200u);
  EXPECT_EQ(client_.request("DELETE", admin("/admin/blobs"), kJson).status, 401u);
  EXPECT_EQ(client_.get(admin("/metrics")).status, 200u);
  EXPECT_EQ(client_.get(admin("/healthz")).status, 200u);

  start_proxy("admin:\n  address: 127.0.0.1:0\n  metrics_need_token: true\n  token_file: " +
              token_file.string() + "\n");
  EXPECT_EQ(client_.get(admin("/metrics")).status, 401u);
  EXPECT_EQ(client_.get(admin("/metrics"), {{"Authorization", "Bearer s3cret-token"}}).status,
            200u);
}

TEST_F(OperationsTest, AdminCanBeDisabled) {
  start_proxy("admin:\n  enabled: false\n");
  EXPECT_EQ(proxy_->srv().admin_port(), 0u);
  EXPECT_EQ(client_.get(proxy_->url() + "/v2/").status, 200u);
}

}  // namespace
}  // namespace layercache::testing
