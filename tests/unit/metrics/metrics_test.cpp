#include "metrics/metrics.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "tests/support/exposition.hpp"

namespace layercache::metrics {
namespace {

using testing::metric_value;
using testing::parse_exposition;

TEST(metrics, status_classes_and_names) {
  EXPECT_EQ(status_class(200), "2xx");
  EXPECT_EQ(status_class(206), "2xx");
  EXPECT_EQ(status_class(307), "3xx");
  EXPECT_EQ(status_class(404), "4xx");
  EXPECT_EQ(status_class(503), "5xx");
  EXPECT_EQ(status_class(0), "other");
  EXPECT_EQ(status_class(101), "other");
  EXPECT_EQ(to_string(route::tags_list), "tags_list");
  EXPECT_EQ(to_string(source::joined), "joined");
}

TEST(metrics, requests_are_counted_by_route_source_and_class) {
  registry r;
  request_sample s;
  s.kind = route::blob;
  s.from = source::hit;
  s.status = 206;
  s.duration = std::chrono::microseconds(300);
  s.ttfb = std::chrono::microseconds(120);
  r.observe(s);
  r.observe(s);
  s.from = source::miss;
  s.status = 502;
  s.duration = std::chrono::seconds(3);
  r.observe(s);
  r.served(source::hit, 1000);
  r.served(source::miss, 24);
  r.served(source::joined, 0);

  const auto m = parse_exposition(r.serialize());
  const std::string d = "layercache_http_request_duration_seconds";
  EXPECT_EQ(metric_value(m, d + "_count", {{"route", "blob"}, {"source", "hit"}, {"code", "2xx"}}),
            2);
  EXPECT_EQ(metric_value(m, d + "_count", {{"route", "blob"}, {"source", "miss"}, {"code", "5xx"}}),
            1);
  EXPECT_NEAR(metric_value(m, d + "_sum", {{"source", "miss"}}), 3.0, 1e-9);
  // A 300 µs hit lands in the 0.0005 bucket, not in 0.00025.
  EXPECT_EQ(metric_value(m, d + "_bucket", {{"source", "hit"}, {"le", "0.0005"}}), 2);
  EXPECT_EQ(metric_value(m, d + "_bucket", {{"source", "hit"}, {"le", "0.00025"}}), 0);
  EXPECT_EQ(metric_value(m, "layercache_http_time_to_first_byte_seconds_count"), 3);
  EXPECT_EQ(metric_value(m, "layercache_http_response_bytes_total", {{"source", "hit"}}), 1000);
  EXPECT_EQ(metric_value(m, "layercache_http_response_bytes_total", {{"source", "miss"}}), 24);
  // Every source is exposed (at 0 until used), so rates exist from the first scrape.
  EXPECT_TRUE(
      testing::has_metric(m, "layercache_http_response_bytes_total", {{"source", "prefetch"}}));
  // Only combinations that happened are exposed.
  EXPECT_FALSE(testing::has_metric(m, d + "_count", {{"source", "local"}}));
}

TEST(metrics, upstreams_tokens_and_events) {
  registry r;
  auto& up = r.upstream("docker.io");
  EXPECT_EQ(&up, &r.upstream("docker.io"));
  up.request(200, std::chrono::milliseconds(40));
  up.request(0, std::chrono::seconds(10));
  up.request(100, std::chrono::milliseconds(1));  // not a final answer: not counted
  up.received(4096);
  up.token_fetch(true);
  up.token_fetch(false);
  up.token_fetch(false);
  r.stale_serve();
  r.digest_failure("manifest");
  r.digest_failure("nonsense");  // unknown kinds are not invented
  r.config_reload(true);
  r.config_reload(false);

  const auto m = parse_exposition(r.serialize());
  const std::string u = "layercache_upstream_request_duration_seconds_count";
  EXPECT_EQ(metric_value(m, u, {{"upstream", "docker.io"}, {"outcome", "2xx"}}), 1);
  EXPECT_EQ(metric_value(m, u, {{"upstream", "docker.io"}, {"outcome", "error"}}), 1);
  EXPECT_EQ(metric_value(m, u), 2);
  EXPECT_EQ(metric_value(m, "layercache_upstream_received_bytes_total"), 4096);
  EXPECT_EQ(metric_value(m, "layercache_upstream_token_fetches_total", {{"outcome", "ok"}}), 1);
  EXPECT_EQ(metric_value(m, "layercache_upstream_token_fetches_total", {{"outcome", "error"}}), 2);
  EXPECT_EQ(metric_value(m, "layercache_manifest_stale_serves_total"), 1);
  EXPECT_EQ(metric_value(m, "layercache_digest_failures_total", {{"kind", "manifest"}}), 1);
  EXPECT_EQ(metric_value(m, "layercache_digest_failures_total"), 1);
  EXPECT_EQ(metric_value(m, "layercache_config_reloads_total", {{"outcome", "ok"}}), 1);
  EXPECT_EQ(metric_value(m, "layercache_config_reloads_total", {{"outcome", "error"}}), 1);
  EXPECT_EQ(metric_value(m, "layercache_build_info"), 1);
}

TEST(metrics, snapshot_values_are_read_at_each_scrape_and_counters_never_fall) {
  registry r;
  snapshot next;
  next.has_store = true;
  next.used_bytes = 100;
  next.capacity_bytes = 1000;
  next.evicted_blobs = 3;
  next.blob_digest_failures = 1;
  next.open_connections = 7;
  next.memory_hits = 11;
  next.memory_shared = 12;
  next.memory_misses = 13;
  next.block_cache_bytes = 4096;
  next.write_buffer_bytes = 8192;
  next.hashed_bytes = 21;
  next.background_yields = 22;
  next.demand_takeovers = 23;
  next.unproven_reads = 24;
  r.on_collect([&next](snapshot& s) { s = next; });
  auto m = parse_exposition(r.serialize());
  EXPECT_EQ(metric_value(m, "layercache_cache_used_bytes"), 100);
  EXPECT_EQ(metric_value(m, "layercache_cache_capacity_bytes"), 1000);
  EXPECT_EQ(metric_value(m, "layercache_cache_evicted_blobs_total"), 3);
  EXPECT_EQ(metric_value(m, "layercache_digest_failures_total", {{"kind", "blob"}}), 1);
  EXPECT_EQ(metric_value(m, "layercache_http_open_connections"), 7);
  EXPECT_EQ(metric_value(m, "layercache_cache_memory_reads_total", {{"result", "hit"}}), 11);
  EXPECT_EQ(metric_value(m, "layercache_cache_memory_reads_total", {{"result", "shared"}}), 12);
  EXPECT_EQ(metric_value(m, "layercache_cache_memory_reads_total", {{"result", "miss"}}), 13);
  EXPECT_EQ(metric_value(m, "layercache_cache_block_cache_bytes"), 4096);
  EXPECT_EQ(metric_value(m, "layercache_cache_write_buffer_bytes"), 8192);
  EXPECT_EQ(metric_value(m, "layercache_cache_hashed_bytes_total"), 21);
  EXPECT_EQ(metric_value(m, "layercache_cache_background_yields_total"), 22);
  EXPECT_EQ(metric_value(m, "layercache_cache_demand_takeovers_total"), 23);
  EXPECT_EQ(metric_value(m, "layercache_cache_unproven_reads_total"), 24);
  next.used_bytes = 50;
  next.evicted_blobs = 5;
  m = parse_exposition(r.serialize());
  EXPECT_EQ(metric_value(m, "layercache_cache_used_bytes"), 50);
  EXPECT_EQ(metric_value(m, "layercache_cache_evicted_blobs_total"), 5);
  EXPECT_GT(metric_value(m, "process_resident_memory_bytes"), 0);
  EXPECT_GT(metric_value(m, "process_open_fds"), 0);
  EXPECT_GT(metric_value(m, "process_start_time_seconds"), 1.6e9);
}

// The disk gauges: the store's files, the free space under them, and cache.max_disk only
// when it is set (an absent series, not a 0 that would read as "no room").
TEST(metrics, disk_gauges_follow_the_store_and_max_disk_only_when_set) {
  registry r;
  snapshot next;
  next.has_store = true;
  next.disk_bytes = 3000;
  next.disk_free_bytes = 7000;
  next.disk_compactions = 2;
  r.on_collect([&next](snapshot& s) { s = next; });
  auto text = r.serialize();
  auto m = parse_exposition(text);
  EXPECT_EQ(metric_value(m, "layercache_cache_disk_bytes"), 3000);
  EXPECT_EQ(metric_value(m, "layercache_cache_disk_free_bytes"), 7000);
  EXPECT_EQ(metric_value(m, "layercache_cache_disk_compactions_total"), 2);
  EXPECT_EQ(text.find("\nlayercache_cache_disk_max_bytes "), std::string::npos) << text;
  next.disk_max_bytes = 5000;
  m = parse_exposition(r.serialize());
  EXPECT_EQ(metric_value(m, "layercache_cache_disk_max_bytes"), 5000);
}

TEST(metrics, concurrent_observations_are_all_counted) {
  registry r;
  constexpr int threads = 4;
  constexpr int each = 5000;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&r, t] {
      request_sample s;
      s.kind = static_cast<route>(t % route_count);
      s.from = source::hit;
      s.status = 200;
      for (int i = 0; i < each; ++i) {
        r.observe(s);
        r.served(source::hit, 1);
        r.upstream("u").received(1);
      }
    });
  }
  for (auto& t : pool) t.join();
  const auto m = parse_exposition(r.serialize());
  EXPECT_EQ(metric_value(m, "layercache_http_request_duration_seconds_count"), threads * each);
  EXPECT_EQ(metric_value(m, "layercache_http_response_bytes_total"), threads * each);
  EXPECT_EQ(metric_value(m, "layercache_upstream_received_bytes_total"), threads * each);
}

TEST(metrics, promtool_accepts_the_exposition) {
  registry r;
  request_sample s;
  s.kind = route::manifest;
  s.from = source::miss;
  s.status = 200;
  r.observe(s);
  r.upstream("docker.io").request(200, std::chrono::milliseconds(5));
  snapshot snap;
  snap.has_store = true;
  r.on_collect([snap](snapshot& out) { out = snap; });
  const auto lint = testing::promtool_check_metrics(r.serialize());
  EXPECT_TRUE(lint.ok) << lint.output;
}

}  // namespace
}  // namespace layercache::metrics
