// A real Prometheus server (Debian's `prometheus`) scrapes layercache on loopback: the target
// comes up and layercache's metrics can be queried through Prometheus's HTTP API.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <thread>

#include "tests/support/http_client.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

// Polls `check` every 250 ms until it returns true or `limit` passes.
template <typename F>
bool eventually(F check, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (check()) return true;
    std::this_thread::sleep_for(250ms);
  }
  return check();
}

class PrometheusTest : public ::testing::Test {
 protected:
  // Starts Prometheus scraping `target` every second; retries with another port if the one
  // picked was taken meanwhile.
  void start_prometheus(const std::string& target) {
    const auto config = dir_.path() / "prometheus.yml";
    write_file(config,
               "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
               "scrape_configs:\n  - job_name: layercache\n    static_configs:\n"
               "      - targets: ['" +
                   target + "']\n");
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = free_port();
      prometheus_ = std::make_unique<child_process>(
          std::vector<std::string>{
              "prometheus", "--config.file=" + config.string(),
              "--storage.tsdb.path=" + (dir_.path() / ("data" + std::to_string(attempt))).string(),
              "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"},
          dir_.path() / "prometheus.log");
      if (eventually(
              [&] {
                try {
                  return client_.get(api("/-/ready")).status == 200;
                } catch (const std::exception&) {
                  return !prometheus_->running();
                }
              },
              30s) &&
          prometheus_->running()) {
        return;
      }
      prometheus_->stop();
    }
    FAIL() << "prometheus did not start:\n" << read_file(dir_.path() / "prometheus.log");
  }

  std::string api(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }

  boost::json::value get_json(const std::string& path) {
    const auto r = client_.get(api(path));
    if (r.status != 200) return {};
    return boost::json::parse(r.body);
  }

  temp_dir dir_{"layercache-prometheus"};
  std::unique_ptr<child_process> prometheus_;
  std::uint16_t port_ = 0;
  http_client client_;
};

TEST_F(PrometheusTest, ScrapesLayercacheAndQueriesItsMetrics) {
  // The upstream is never contacted: only /v2/ is asked for.
  layercache_instance proxy("upstreams:\n" + upstream_yaml("up", "http://127.0.0.1:9", true));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(client_.get(proxy.url() + "/v2/").status, 200u);
  const std::string target = "127.0.0.1:" + std::to_string(proxy.srv().admin_port());
  start_prometheus(target);

  std::string last;
  const bool up = eventually(
      [&] {
        const auto v = get_json("/api/v1/targets");
        if (!v.is_object()) return false;
        last = boost::json::serialize(v);
        for (const auto& t : v.at("data").at("activeTargets").as_array()) {
          if (t.at("scrapeUrl").as_string() == "http://" + target + "/metrics" &&
              t.at("health").as_string() == "up") {
            return true;
          }
        }
        return false;
      },
      60s);
  ASSERT_TRUE(up) << "target never up: " << last;

  double requests = -1;
  const bool queried = eventually(
      [&] {
        const auto v = get_json(
            "/api/v1/query?query=sum(layercache_http_request_duration_seconds_count%7Broute%3D%22"
            "base%22%7D)");
        if (!v.is_object()) return false;
        last = boost::json::serialize(v);
        const auto& result = v.at("data").at("result").as_array();
        if (result.empty()) return false;
        requests = std::stod(std::string(result[0].at("value").as_array()[1].as_string()));
        return requests > 0;
      },
      30s);
  ASSERT_TRUE(queried) << last;
  EXPECT_EQ(requests, 3);

  const auto info = get_json("/api/v1/query?query=layercache_build_info");
  ASSERT_TRUE(info.is_object());
  const auto& result = info.at("data").at("result").as_array();
  ASSERT_EQ(result.size(), 1u);
  EXPECT_EQ(result[0].at("metric").at("job").as_string(), "layercache");
}

}  // namespace
}  // namespace layercache::testing
