// `layercachectl node setup` for real: it points a real containerd and a real dockerd (their own
// files, never the machine's /etc) at a running layercache, merging with what those files
// already hold; then each runtime pulls an image that only layercache can reach (the
// registries' own addresses and the other mirrors in the files are dead ports), layercache's
// metrics count the blobs it served, and `doctor` on the same files passes. dockerd is
// pointed at the mirror while it runs: SIGHUP reloads registry-mirrors. Needs root and Debian's
// docker.io / containerd; skipped (visibly) without them.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"
#include "tests/support/runtimes.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
constexpr std::size_t MiB = std::size_t{1024} * 1024;

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// A node: layercache on a port of its own with a config file naming it (the mirror URL comes
// from the config's listener), its only upstream a local registry called docker.io, and a
// root directory for the runtimes' files.
class NodeSetup : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = runtime_unavailable(programs()); !why.empty()) GTEST_SKIP() << why;
    img_ = std::make_unique<image>(make_image(image_format::docker, {3 * MiB, 2 * MiB}, 701));
    registry_pusher(upstream_.url()).push_image("library/lcnode", "v1", *img_);
    const std::string yaml =
        "server:\n  listen:\n    - address: 127.0.0.1:" + std::to_string(free_port()) +
        "\nupstreams:\n" + upstream_yaml("docker.io", upstream_.url(), true);
    proxy_ = std::make_unique<layercache_instance>(yaml);
    write_file(config_, yaml);
  }

  [[nodiscard]] virtual std::vector<std::string> programs() const = 0;

  command_result ctl(const std::string& command, std::vector<std::string> args) {
    std::vector<std::string> argv{LAYERCACHECTL_PATH};
    if (command == "setup") argv.insert(argv.end(), {"node", "setup"});
    if (command == "doctor") argv.emplace_back("doctor");
    argv.insert(argv.end(), {"--config", config_.string(), "--root", root().string()});
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, 60s);
  }

  [[nodiscard]] fs::path root() const { return dir_.path() / "node"; }
  [[nodiscard]] double blob_requests() const {
    return proxy_->metric("layercache_http_request_duration_seconds_count", {{"route", "blob"}});
  }
  [[nodiscard]] std::string mirror() const { return proxy_->url(); }

  temp_dir dir_;
  fs::path config_ = dir_.path() / "layercache.yaml";
  registry_process upstream_;
  std::unique_ptr<image> img_;
  std::unique_ptr<layercache_instance> proxy_;
};

class NodeSetupContainerd : public NodeSetup {
  [[nodiscard]] std::vector<std::string> programs() const override { return {"containerd", "ctr"}; }
};

TEST_F(NodeSetupContainerd, WritesHostsTomlThatContainerdPullsThroughAndDoctorPasses) {
  const fs::path hosts = root() / "etc/containerd/certs.d";
  fs::create_directories(root() / "etc/containerd");
  write_file(root() / "etc/containerd/config.toml",
             read_file(fs::path(DEPLOY_DIR) / "containerd/config.toml"));
  // The node already sends docker.io to another mirror (dead), its server a dead port too.
  const fs::path hub = hosts / "docker.io/hosts.toml";
  fs::create_directories(hub.parent_path());
  const std::string other = "[host.\"http://127.0.0.1:" + std::to_string(free_port()) +
                            "\"]\n  capabilities = [\"pull\", \"resolve\"]\n";
  const std::string before = "server = \"http://127.0.0.1:9\"\n\n" + other;
  write_file(hub, before);

  const auto setup = ctl("setup", {"--containerd"});
  ASSERT_EQ(setup.exit_code, 0) << setup.output;
  EXPECT_TRUE(contains(setup.output, "changed      " + hub.string())) << setup.output;
  EXPECT_TRUE(contains(setup.output, "keeps its own server = \"http://127.0.0.1:9\""))
      << setup.output;
  const std::string after = read_file(hub);
  EXPECT_TRUE(contains(after, other)) << after;
  EXPECT_LT(after.find("[host.\"" + mirror() + "\"]"), after.find(other)) << after;
  EXPECT_EQ(read_file(hub.string() + ".layercache-backup"), before);
  const auto again = ctl("setup", {"--containerd"});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(contains(again.output, "unchanged    " + hub.string())) << again.output;
  EXPECT_EQ(read_file(hub), after);

  containerd_process containerd;
  const double blobs_before = blob_requests();
  auto pull = containerd.ctr({"image", "pull", "--hosts-dir", hosts.string(), "--snapshotter",
                              "native", "docker.io/library/lcnode:v1"},
                             180s);
  ASSERT_EQ(pull.exit_code, 0) << pull.output << "\n--- containerd log ---\n" << containerd.log();
  auto content = containerd.ctr({"content", "ls", "--quiet"}, 30s);
  ASSERT_EQ(content.exit_code, 0) << content.output;
  for (const auto& layer : img_->layers) {
    EXPECT_TRUE(contains(content.output, layer.digest.str())) << content.output;
  }
  EXPECT_GE(blob_requests() - blobs_before, static_cast<double>(img_->layers.size() + 1))
      << "layercache did not serve the blobs";

  // containerd only on this node: doctor checks it, says dockerd is not installed, passes.
  const auto doctor = ctl("doctor", {});
  EXPECT_EQ(doctor.exit_code, 0) << doctor.output;
  EXPECT_TRUE(contains(doctor.output, "note     dockerd: not installed")) << doctor.output;
  EXPECT_TRUE(contains(doctor.output, "ok       containerd: " + hub.string())) << doctor.output;
}

class NodeSetupDockerd : public NodeSetup {
  [[nodiscard]] std::vector<std::string> programs() const override {
    return {"dockerd", "docker", "containerd", "runc"};
  }
};

TEST_F(NodeSetupDockerd, MergesRegistryMirrorsThatARunningDockerdReloadsAndPullsThrough) {
  const fs::path daemon_json = root() / "etc/docker/daemon.json";
  fs::create_directories(daemon_json.parent_path());
  // Another mirror (dead) and a key of the node's own.
  const std::string before =
      "{\n  \"max-concurrent-downloads\": 2,\n  \"registry-mirrors\": "
      "[\"http://127.0.0.1:9/\"]\n}\n";
  write_file(daemon_json, before);
  dockerd_process dockerd(dockerd_process::config_file{daemon_json});

  const auto setup = ctl("setup", {"--docker"});
  ASSERT_EQ(setup.exit_code, 0) << setup.output;
  EXPECT_TRUE(contains(setup.output, "changed      " + daemon_json.string())) << setup.output;
  EXPECT_TRUE(contains(setup.output, "SIGHUP")) << setup.output;
  const auto json = boost::json::parse(read_file(daemon_json)).as_object();
  EXPECT_EQ(json.at("max-concurrent-downloads"), 2);
  EXPECT_EQ(json.at("registry-mirrors"), (boost::json::array{mirror(), "http://127.0.0.1:9/"}));
  EXPECT_EQ(read_file(daemon_json.string() + ".layercache-backup"), before);
  const std::string after = read_file(daemon_json);
  const auto again = ctl("setup", {"--docker"});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(contains(again.output, "unchanged    " + daemon_json.string())) << again.output;
  EXPECT_EQ(read_file(daemon_json), after);

  // No restart: SIGHUP, then dockerd lists the new mirror.
  dockerd.reload();
  const std::string port = std::to_string(proxy_->port());
  bool reloaded = false;
  for (int i = 0; i < 150 && !reloaded; ++i) {
    const auto info = dockerd.docker({"info", "--format", "{{json .RegistryConfig.Mirrors}}"}, 30s);
    reloaded = info.exit_code == 0 && contains(info.output, "127.0.0.1:" + port);
    if (!reloaded) std::this_thread::sleep_for(200ms);
  }
  ASSERT_TRUE(reloaded) << "dockerd did not reload registry-mirrors on SIGHUP\n" << dockerd.log();

  const double blobs_before = blob_requests();
  auto pull = dockerd.docker({"pull", "lcnode:v1"}, 180s);
  ASSERT_EQ(pull.exit_code, 0) << pull.output << "\n--- dockerd log ---\n" << dockerd.log();
  auto id = dockerd.docker({"image", "inspect", "--format", "{{.Id}}", "lcnode:v1"}, 30s);
  EXPECT_TRUE(contains(id.output, img_->config.digest.str())) << id.output;
  EXPECT_GE(blob_requests() - blobs_before, static_cast<double>(img_->layers.size() + 1))
      << "layercache did not serve the blobs";

  const auto doctor = ctl("doctor", {"--docker"});
  EXPECT_EQ(doctor.exit_code, 0) << doctor.output;
  EXPECT_TRUE(contains(doctor.output, "ok       dockerd: registry-mirrors has " + mirror()))
      << doctor.output;
}

}  // namespace
}  // namespace layercache::testing
