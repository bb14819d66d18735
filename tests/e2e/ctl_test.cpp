// layercachectl against a running layercache: stats, preload, blobs, purge, and a profile's
// round trip (import from a file, list, export, delete), with and without the admin token.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>

#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

class CtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    img_ = std::make_unique<image>(make_image(image_format::oci, {600 * 1024, 90 * 1024}, 31));
    registry_pusher(upstream_.url()).push_image("ctl/app", "v1", *img_);
  }

  command_result ctl(layercache_instance& p, std::vector<std::string> args,
                     const std::string& token_file = {}) {
    std::vector<std::string> argv = {LAYERCACHECTL_PATH, "--admin",
                                     "127.0.0.1:" + std::to_string(p.srv().admin_port())};
    if (!token_file.empty()) {
      argv.emplace_back("--token-file");
      argv.push_back(token_file);
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, 60s);
  }

  registry_process upstream_;
  std::unique_ptr<image> img_;
  temp_dir dir_;
};

TEST_F(CtlTest, StatsPreloadBlobsPurgeAndAProfileRoundTrip) {
  layercache_instance p("prefetch:\n  eager_layers: never\nupstreams:\n" +
                        upstream_yaml("up", upstream_.url(), true));
  const auto stats = ctl(p, {"stats"});
  ASSERT_EQ(stats.exit_code, 0) << stats.output;
  EXPECT_TRUE(boost::json::parse(stats.output).as_object().contains("store")) << stats.output;

  // The registry part names the upstream by its host.
  const std::string host = upstream_.url().substr(upstream_.url().find("://") + 3);
  const auto preload = ctl(p, {"preload", host + "/ctl/app:v1"});
  ASSERT_EQ(preload.exit_code, 0) << preload.output;
  EXPECT_EQ(boost::json::parse(preload.output).at("blobs").to_number<int>(), 3);
  const auto blobs = ctl(p, {"blobs"});
  ASSERT_EQ(blobs.exit_code, 0) << blobs.output;
  EXPECT_EQ(boost::json::parse(blobs.output).at("total").to_number<int>(), 3);

  const std::string layer = img_->layers[0].digest.str();
  EXPECT_EQ(ctl(p, {"purge", layer}).exit_code, 0);
  const auto again = ctl(p, {"purge", layer});
  EXPECT_EQ(again.exit_code, 1) << "purging an uncached blob succeeded";
  EXPECT_NE(again.output.find("404"), std::string::npos) << again.output;
  EXPECT_EQ(ctl(p, {"purge", "../admin"}).exit_code, 2);
  EXPECT_EQ(ctl(p, {"frobnicate"}).exit_code, 2);

  // A profile: import from a file, list, export to a file, delete.
  const std::string manifest = img_->manifest.digest.str();
  const std::string profile = "{\"version\":1,\"manifest\":\"" + manifest +
                              "\",\"runs\":2,\"entries\":[{\"blob\":\"" + layer +
                              "\",\"offset\":4096,\"length\":100,\"seen\":2,\"at_ms\":12}]}";
  write_file(dir_.path() / "in.json", profile);
  const auto imported = ctl(p, {"profile", "import", manifest, (dir_.path() / "in.json").string()});
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  const auto listed = ctl(p, {"profiles"});
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  const auto list = boost::json::parse(listed.output).at("profiles").as_array();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].at("manifest").as_string(), manifest);
  EXPECT_EQ(list[0].at("runs").to_number<int>(), 2);
  const auto out = dir_.path() / "out.json";
  ASSERT_EQ(ctl(p, {"profile", "export", manifest, out.string()}).exit_code, 0);
  EXPECT_EQ(boost::json::parse(read_file(out)), boost::json::parse(profile));
  const auto to_stdout = ctl(p, {"profile", "export", manifest});
  ASSERT_EQ(to_stdout.exit_code, 0);
  EXPECT_EQ(boost::json::parse(to_stdout.output), boost::json::parse(profile));
  const auto foreign = ctl(p, {"profile", "import", layer, (dir_.path() / "in.json").string()});
  EXPECT_EQ(foreign.exit_code, 1) << "a profile was stored under another manifest";
  EXPECT_EQ(ctl(p, {"profile", "delete", manifest}).exit_code, 0);
  EXPECT_EQ(ctl(p, {"profile", "export", manifest}).exit_code, 1);
}

TEST_F(CtlTest, AdminTokenFromAFile) {
  const auto token = dir_.path() / "admin-token";
  write_file(token, "adm-tok-1\n", 0600);
  layercache_instance p("admin:\n  address: 127.0.0.1:0\n  token_file: " + token.string() +
                        "\nupstreams:\n" + upstream_yaml("up", upstream_.url(), true));
  const auto denied = ctl(p, {"stats"});
  EXPECT_EQ(denied.exit_code, 1) << denied.output;
  EXPECT_NE(denied.output.find("401"), std::string::npos) << denied.output;
  EXPECT_EQ(ctl(p, {"stats"}, token.string()).exit_code, 0);
  const auto unreachable =
      run_command({LAYERCACHECTL_PATH, "--admin", "127.0.0.1:1", "stats"}, 60s);
  EXPECT_EQ(unreachable.exit_code, 2) << unreachable.output;
}

TEST_F(CtlTest, DoctorSaysWhatEachRuntimeMissesAndPassesWithTheDeployFiles) {
  layercache_instance p("upstreams:\n" + upstream_yaml("up", upstream_.url(), true));
  const std::string mirror = p.url();
  const auto root = dir_.path() / "node";
  std::filesystem::create_directories(root);
  auto doctor = [&] {
    return run_command({LAYERCACHECTL_PATH, "doctor", "--root", root.string(), "--mirror", mirror},
                       60s);
  };

  // A bare node: nothing points at layercache; each file is named with its snippet.
  const auto bare = doctor();
  EXPECT_EQ(bare.exit_code, 1) << bare.output;
  EXPECT_NE(bare.output.find("ok       layercached answers at " + mirror), std::string::npos)
      << bare.output;
  EXPECT_NE(bare.output.find("missing  dockerd: " + (root / "etc/docker/daemon.json").string()),
            std::string::npos)
      << bare.output;
  EXPECT_NE(bare.output.find("\"registry-mirrors\": [\"" + mirror + "\"]"), std::string::npos);
  EXPECT_NE(
      bare.output.find("missing  containerd: " + (root / "etc/containerd/config.toml").string()),
      std::string::npos);
  EXPECT_NE(bare.output.find("[host.\"" + mirror + "\"]"), std::string::npos);

  // The shipped deploy files, pointed at this mirror: nothing is missing.
  auto install = [&](const std::string& from, const std::string& to) {
    std::string text = read_file(std::filesystem::path(DEPLOY_DIR) / from);
    for (std::size_t at; (at = text.find("http://127.0.0.1:5000")) != std::string::npos;) {
      text.replace(at, std::string_view("http://127.0.0.1:5000").size(), mirror);
    }
    std::filesystem::create_directories((root / to).parent_path());
    write_file(root / to, text);
  };
  install("docker/daemon.json", "etc/docker/daemon.json");
  install("containerd/config.toml", "etc/containerd/config.toml");
  install("containerd/certs.d/docker.io/hosts.toml", "etc/containerd/certs.d/docker.io/hosts.toml");
  const auto good = doctor();
  EXPECT_EQ(good.exit_code, 0) << good.output;
  EXPECT_NE(good.output.find("all runtimes found use layercache"), std::string::npos)
      << good.output;

  // containerd 2.1+ with a config_path list (as some distributions ship it): mirrors are
  // skipped by the transfer service.
  write_file(root / "etc/containerd/config.toml",
             "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n"
             "  config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n");
  const auto list = doctor();
  EXPECT_EQ(list.exit_code, 1) << list.output;
  EXPECT_NE(list.output.find("is a list"), std::string::npos) << list.output;

  // layercached not running.
  const auto down = run_command(
      {LAYERCACHECTL_PATH, "doctor", "--root", root.string(), "--mirror", "http://127.0.0.1:1"},
      60s);
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.output.find("missing  layercached: no answer"), std::string::npos) << down.output;
}

}  // namespace
}  // namespace layercache::testing
