// layercachectl against a running layercache: stats, preload, blobs, purge, and a profile's
// round trip (import from a file, list, export, delete), with and without the admin token;
// preload as an operator writes it (short names to the default upstream, --upstream,
// --platform, progress, --timeout as the longest wait without progress; prefetch.preload
// alike) and profile export by image reference;
// `doctor` on a node's runtime files, and on a lazy node's (containerd's stargz proxy plugin,
// layercache-stargz's socket and flags, /dev/fuse).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <boost/json.hpp>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/support/fault_upstream.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

// A unix socket server standing in for layercache-stargz: each connection's HTTP/2 preface is
// answered with a SETTINGS frame, as a gRPC server answers it, or (`grpc` false) the connection
// is closed at once.
class fake_grpc_socket {
 public:
  fake_grpc_socket(const std::filesystem::path& path, bool grpc) : path_(path), grpc_(grpc) {
    std::filesystem::create_directories(path.parent_path());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string name = path.string();
    if (name.size() >= sizeof(addr.sun_path)) throw std::runtime_error("socket path too long");
    std::memcpy(addr.sun_path, name.c_str(), name.size() + 1);
    listen_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_ < 0 ||
        ::bind(listen_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_, 8) != 0 || ::pipe2(stop_.data(), O_CLOEXEC) != 0) {
      throw std::runtime_error(std::string("fake_grpc_socket: ") +
                               std::error_code(errno, std::generic_category()).message());
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~fake_grpc_socket() {
    ::close(stop_[1]);
    thread_.join();
    ::close(stop_[0]);
    ::close(listen_);
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  fake_grpc_socket(const fake_grpc_socket&) = delete;
  fake_grpc_socket& operator=(const fake_grpc_socket&) = delete;

 private:
  void serve() const {
    for (;;) {
      std::array<pollfd, 2> fds{pollfd{listen_, POLLIN, 0}, pollfd{stop_[0], POLLIN, 0}};
      if (::poll(fds.data(), fds.size(), -1) < 0 || fds[1].revents != 0) return;
      const int c = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      if (grpc_) {
        // The client preface (24 bytes of magic and a 9-byte SETTINGS frame), then ours.
        std::array<char, 33> preface{};
        std::size_t got = 0;
        for (ssize_t n = 1; got < preface.size() && n > 0; got += static_cast<std::size_t>(n)) {
          n = ::recv(c, preface.data() + got, preface.size() - got, 0);
          if (n <= 0) break;
        }
        static constexpr std::array<unsigned char, 9> settings{0, 0, 0, 4, 0, 0, 0, 0, 0};
        if (got == preface.size()) {
          (void)::send(c, settings.data(), settings.size(), MSG_NOSIGNAL);
        }
      }
      ::close(c);
    }
  }

  std::filesystem::path path_;
  bool grpc_;
  int listen_ = -1;
  std::array<int, 2> stop_{-1, -1};
  std::thread thread_;
};

// The last non-empty line of `text` (a command's stdout after its progress on stderr).
std::string last_line(const std::string& text) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const auto nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

// The lines of `text`.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

class CtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    img_ = std::make_unique<image>(
        make_image(image_format::oci, {600 * std::size_t{1024}, 90 * std::size_t{1024}}, 31));
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
  EXPECT_EQ(boost::json::parse(last_line(preload.output)).at("blobs").to_number<int>(), 3);
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
  // The export carries the manifest (stored by the pulls above) beside the profile.
  auto exported = boost::json::parse(read_file(out)).as_object();
  EXPECT_EQ(exported["manifest_bytes"].as_string(), img_->manifest.data);
  exported.erase("manifest_bytes");
  exported.erase("manifest_media_type");
  EXPECT_EQ(boost::json::value(exported), boost::json::parse(profile));
  const auto to_stdout = ctl(p, {"profile", "export", manifest});
  ASSERT_EQ(to_stdout.exit_code, 0);
  EXPECT_EQ(boost::json::parse(to_stdout.output), boost::json::parse(read_file(out)));
  const auto foreign = ctl(p, {"profile", "import", layer, (dir_.path() / "in.json").string()});
  EXPECT_EQ(foreign.exit_code, 1) << "a profile was stored under another manifest";
  EXPECT_EQ(ctl(p, {"profile", "delete", manifest}).exit_code, 0);
  EXPECT_EQ(ctl(p, {"profile", "export", manifest}).exit_code, 1);
}

// Preload as an operator writes it: a short name goes to the (non-Hub) default upstream,
// --upstream to another, --platform picks an index's manifest (default: this host's), the
// progress on stderr ends with the totals; profile export by tag is export by digest.
TEST_F(CtlTest, PreloadShortNamesUpstreamsPlatformsProgressAndProfileExportByImage) {
  const auto arm = make_image(image_format::oci, {300 * std::size_t{1024}}, 32, "arm64");
  registry_pusher pusher(upstream_.url());
  pusher.push_image("ctl/app", "arm-only", arm);
  const auto index = make_index(image_format::oci, {{img_.get(), "amd64"}, {&arm, "arm64"}});
  pusher.push_manifest("ctl/app", "multi", index);
  pusher.push_image("solo", "v1", arm);  // one component: no "library/" at a non-Hub upstream
  registry_process other;
  const auto team = make_image(image_format::oci, {50 * std::size_t{1024}}, 33);
  registry_pusher(other.url()).push_image("team/app", "v2", team);
  layercache_instance p("prefetch:\n  eager_layers: never\nupstreams:\n" +
                        upstream_yaml("up", upstream_.url(), true) +
                        upstream_yaml("other", other.url(), false));

  const auto v1 = ctl(p, {"preload", "ctl/app:v1"});
  ASSERT_EQ(v1.exit_code, 0) << v1.output;
  const auto result = boost::json::parse(last_line(v1.output)).as_object();
  EXPECT_EQ(result.at("upstream").as_string(), "up");
  EXPECT_EQ(result.at("state").as_string(), "done");
  const std::uint64_t total =
      img_->config.data.size() + img_->layers[0].data.size() + img_->layers[1].data.size();
  const auto lines = lines_of(v1.output);
  ASSERT_GE(lines.size(), 2u) << v1.output;
  const std::string totals = "preload ctl/app:v1: 3/3 blobs, " + std::to_string(total) + "/" +
                             std::to_string(total) + " bytes";
  EXPECT_TRUE(lines[lines.size() - 2].starts_with(totals)) << v1.output;
  EXPECT_NE(lines[lines.size() - 2].find("done"), std::string::npos) << v1.output;
  const auto solo = ctl(p, {"preload", "solo:v1"});
  EXPECT_EQ(solo.exit_code, 0) << solo.output;

  // --upstream: the short name at the other upstream; not at the default one.
  const auto by_name = ctl(p, {"preload", "--upstream", "other", "team/app:v2"});
  ASSERT_EQ(by_name.exit_code, 0) << by_name.output;
  EXPECT_EQ(boost::json::parse(last_line(by_name.output)).at("blobs").to_number<int>(), 2);
  const auto prefixed = ctl(p, {"preload", "other/team/app:v2"});  // as a client's path
  EXPECT_EQ(prefixed.exit_code, 0) << prefixed.output;
  const auto unknown_tag = ctl(p, {"preload", "team/app:v2"});
  EXPECT_EQ(unknown_tag.exit_code, 1) << unknown_tag.output;
  EXPECT_NE(unknown_tag.output.find("up: team/app:v2: no such manifest"), std::string::npos)
      << unknown_tag.output;
  const auto unknown_upstream = ctl(p, {"preload", "--upstream", "nope", "ctl/app:v1"});
  EXPECT_EQ(unknown_upstream.exit_code, 1);
  EXPECT_NE(unknown_upstream.output.find("no upstream is named nope (configured: up, other)"),
            std::string::npos)
      << unknown_upstream.output;

  // --platform, the old positional platform, and the host's by default.
  const auto on_arm = ctl(p, {"preload", "--platform", "linux/arm64", "ctl/app:multi"});
  ASSERT_EQ(on_arm.exit_code, 0) << on_arm.output;
  const auto arm_result = boost::json::parse(last_line(on_arm.output)).as_object();
  EXPECT_EQ(arm_result.at("digest").as_string(), index.digest.str());
  EXPECT_EQ(arm_result.at("blobs").to_number<int>(), 2);
  EXPECT_EQ(arm_result.at("bytes").to_number<std::uint64_t>(),
            arm.config.data.size() + arm.layers[0].data.size());
  const auto positional = ctl(p, {"preload", "ctl/app:multi", "linux/arm64"});
  EXPECT_EQ(positional.exit_code, 0) << positional.output;
  const auto s390 = ctl(p, {"preload", "ctl/app:multi", "--platform", "linux/s390x"});
  EXPECT_EQ(s390.exit_code, 1);
  EXPECT_NE(s390.output.find("no manifest for platform linux/s390x (it has linux/amd64, "
                             "linux/arm64)"),
            std::string::npos)
      << s390.output;
  utsname host{};
  ASSERT_EQ(::uname(&host), 0);
  const std::string machine = host.machine;
  if (machine == "x86_64" || machine == "aarch64") {
    const auto native = ctl(p, {"preload", "ctl/app:multi"});
    ASSERT_EQ(native.exit_code, 0) << native.output;
    EXPECT_EQ(boost::json::parse(last_line(native.output)).at("blobs").to_number<int>(),
              machine == "x86_64" ? 3 : 2);
  }

  // A profile of the arm64 manifest, imported by its own "manifest" field, exported by tag.
  const std::string arm_digest = arm.manifest.digest.str();
  write_file(dir_.path() / "arm.json",
             "{\"version\":1,\"manifest\":\"" + arm_digest + "\",\"runs\":1,\"entries\":[{" +
                 "\"blob\":\"" + arm.layers[0].digest.str() +
                 "\",\"offset\":0,\"length\":512,\"seen\":1,\"at_ms\":3}]}");
  const auto imported = ctl(p, {"profile", "import", (dir_.path() / "arm.json").string()});
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  const auto by_digest = ctl(p, {"profile", "export", arm_digest});
  ASSERT_EQ(by_digest.exit_code, 0) << by_digest.output;
  const auto by_tag = ctl(p, {"profile", "export", "--platform", "linux/arm64", "ctl/app:multi"});
  ASSERT_EQ(by_tag.exit_code, 0) << by_tag.output;
  EXPECT_EQ(by_tag.output, by_digest.output);
  const auto to_file = dir_.path() / "exported.json";
  ASSERT_EQ(ctl(p, {"profile", "export", "ctl/app:arm-only", to_file.string()}).exit_code, 0);
  EXPECT_EQ(read_file(to_file), by_digest.output);
  const auto none = ctl(p, {"profile", "export", "ctl/app:v1"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.output.find("ctl/app:v1 (" + img_->manifest.digest.str() +
                             "): " + img_->manifest.digest.str() + " has no profile (HTTP 404)"),
            std::string::npos)
      << none.output;
  const auto gone = ctl(p, {"profile", "export", "ctl/app:nope"});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.output.find("no such manifest"), std::string::npos) << gone.output;
  const auto every = ctl(p, {"profile", "export", "--platform", "all", "ctl/app:multi"});
  EXPECT_EQ(every.exit_code, 1);
  EXPECT_NE(every.output.find("name one"), std::string::npos) << every.output;
}

// prefetch.preload resolves its references as layercachectl preload does: a short name at a
// non-Hub default upstream is warmed at start-up (it went to docker.io, refused, before).
TEST_F(CtlTest, ThePreloadListTakesShortNamesToTheDefaultUpstream) {
  layercache_instance p(
      "prefetch:\n  eager_layers: never\n  preload:\n    - ctl/app:v1\n"
      "upstreams:\n" +
      upstream_yaml("up", upstream_.url(), true));
  int total = 0;
  for (int polls = 0; polls < 600 && total < 3; ++polls) {
    const auto blobs = ctl(p, {"blobs"});
    ASSERT_EQ(blobs.exit_code, 0) << blobs.output;
    total = boost::json::parse(blobs.output).at("total").to_number<int>();
    if (total < 3) std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(total, 3) << "the preload list did not warm ctl/app:v1";
}

// --timeout is how long a preload may go without progress: a throttled one that keeps
// moving outlasts it; a stalled one ends with exit status 1 and says where it goes on.
TEST_F(CtlTest, APreloadEndsOnlyWhenItStalls) {
  const auto img = make_image(image_format::oci, {1536 * std::size_t{1024}}, 34);
  std::unique_ptr<layercache_instance> proxy;
  fault_upstream upstream;  // destroyed first: its stalls end before the proxy stops
  upstream.add_blob(img.config.data);
  upstream.add_blob(img.layers[0].data);
  upstream.add_manifest("v1", img.manifest.media_type, img.manifest.data);
  proxy = std::make_unique<layercache_instance>(
      "prefetch:\n  eager_layers: never\nupstreams:\n" +
      upstream_yaml("up", upstream.url(), true,
                    "    timeouts:\n      read: 60s\n    retry:\n      attempts: 1\n"));

  // About 3 s at 512 KiB/s: always moving, so a 2 s --timeout never cuts it off.
  upstream.plan(request_kind::blob_get, fault::throttle(512 * 1024), 100);
  const auto moving = ctl(*proxy, {"--timeout", "2", "preload", "app:v1"});
  EXPECT_EQ(moving.exit_code, 0) << moving.output;
  upstream.clear_plans();

  ASSERT_EQ(ctl(*proxy, {"purge", "--all"}).exit_code, 0);
  upstream.plan(request_kind::blob_get, fault::stall_after(64 * 1024), 100);
  const auto stalled = ctl(*proxy, {"--timeout", "1", "preload", "app:v1"});
  EXPECT_EQ(stalled.exit_code, 1) << stalled.output;
  EXPECT_NE(stalled.output.find("made no progress for 1 s (--timeout); layercached goes on "
                                "with it: GET /admin/preload/"),
            std::string::npos)
      << stalled.output;
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
}

TEST_F(CtlTest, ConnectionErrorsArePlainMessages) {
  // Nothing listens on port 1: the message names the address and the error, never Boost's
  // source files (system_error::what() appends "[/usr/include/boost/...]").
  const auto refused = run_command({LAYERCACHECTL_PATH, "--admin", "127.0.0.1:1", "stats"}, 60s);
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("layercachectl: cannot connect to 127.0.0.1:1: Connection refused"),
            std::string::npos)
      << refused.output;
  EXPECT_EQ(refused.output.find("/usr/include"), std::string::npos) << refused.output;
  EXPECT_EQ(refused.output.find("boost"), std::string::npos) << refused.output;
  const auto v6 = run_command({LAYERCACHECTL_PATH, "--admin", "[::1]:1", "blobs"}, 60s);
  EXPECT_EQ(v6.exit_code, 2) << v6.output;
  EXPECT_NE(v6.output.find("cannot connect to [::1]:1: "), std::string::npos) << v6.output;
  EXPECT_EQ(v6.output.find("/usr/include"), std::string::npos) << v6.output;
  const auto unresolvable =
      run_command({LAYERCACHECTL_PATH, "--admin", "no-such-host.invalid:9401", "stats"}, 60s);
  EXPECT_EQ(unresolvable.exit_code, 2) << unresolvable.output;
  EXPECT_NE(unresolvable.output.find("cannot resolve no-such-host.invalid:9401: "),
            std::string::npos)
      << unresolvable.output;
  EXPECT_EQ(unresolvable.output.find("/usr/include"), std::string::npos) << unresolvable.output;
}

TEST_F(CtlTest, DoctorSaysWhatEachRuntimeMissesAndPassesWithTheDeployFiles) {
  layercache_instance p("upstreams:\n" + upstream_yaml("up", upstream_.url(), true));
  const std::string mirror = p.url();
  const auto root = dir_.path() / "node";
  std::filesystem::create_directories(root);
  auto doctor = [&](std::vector<std::string> more = {}) {
    std::vector<std::string> argv{LAYERCACHECTL_PATH, "doctor",   "--root",
                                  root.string(),      "--mirror", mirror};
    argv.insert(argv.end(), more.begin(), more.end());
    return run_command(argv, 60s);
  };

  // No runtime at all: neither is checked, and that is a problem.
  const auto none = doctor();
  EXPECT_EQ(none.exit_code, 1) << none.output;
  EXPECT_NE(none.output.find("note     dockerd: not installed"), std::string::npos) << none.output;
  EXPECT_NE(none.output.find("missing  no container runtime found"), std::string::npos)
      << none.output;

  // A bare node with both named: nothing points at layercache; each file is named with its
  // snippet.
  const auto bare = doctor({"--docker", "--containerd"});
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
  EXPECT_NE(good.output.find("note     lazy pulling: not set up"), std::string::npos)
      << good.output;

  // Docker's own containerd (the CRI plugin disabled, no config_path): dockerd pulls itself, so
  // its containerd is not checked unless named.
  write_file(root / "etc/containerd/config.toml", "disabled_plugins = [\"cri\"]\n");
  const auto dockers = doctor();
  EXPECT_EQ(dockers.exit_code, 0) << dockers.output;
  EXPECT_NE(dockers.output.find("note     containerd: its CRI plugin is disabled"),
            std::string::npos)
      << dockers.output;
  EXPECT_EQ(doctor({"--containerd"}).exit_code, 1) << "no config_path, and --containerd";

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

// Issue 21: doctor reports each upstream's chain from the config — its mirrors, then the
// upstream — and probes each mirror's /v2/: one that answers is ok, one that does not is a
// note (pulls go on without it), not a problem.
TEST_F(CtlTest, DoctorReportsTheMirrorChain) {
  layercache_instance tier("upstreams:\n" + upstream_yaml("up", upstream_.url(), true));
  layercache_instance node("upstreams:\n" + upstream_yaml("up", upstream_.url(), true));
  const std::string dead = "http://127.0.0.1:" + std::to_string(free_port());
  const auto cfg = dir_.path() / "chain.yaml";
  write_file(cfg, "server:\n  listen:\n    - address: 127.0.0.1:" + std::to_string(node.port()) +
                      "\nupstreams:\n" +
                      upstream_yaml("up", upstream_.url(), true,
                                    "    mirror_select: hash\n    mirrors:\n      - url: " +
                                        tier.url() + "\n      - url: " + dead + "\n"));
  const auto root = dir_.path() / "chain-root";
  std::filesystem::create_directories(root);
  const auto out = run_command(
      {LAYERCACHECTL_PATH, "doctor", "--docker", "--config", cfg.string(), "--root", root.string()},
      60s);
  EXPECT_NE(out.output.find("note     upstream up: " + tier.url() + " → " + dead + " → " +
                            upstream_.url() + " (mirrors hash)"),
            std::string::npos)
      << out.output;
  EXPECT_NE(out.output.find("ok       mirror " + tier.url() + " answers /v2/ (200)"),
            std::string::npos)
      << out.output;
  EXPECT_NE(out.output.find("note     mirror " + dead + ": no answer"), std::string::npos)
      << out.output;
  EXPECT_EQ(out.output.find("missing  mirror"), std::string::npos) << out.output;
}

TEST_F(CtlTest, NodeSetupWritesWhatDoctorChecksOnceAndRefusesWhatItCannotMerge) {
  layercache_instance p("upstreams:\n" + upstream_yaml("up", upstream_.url(), true));
  const auto root = dir_.path() / "setup";
  const auto cfg = dir_.path() / "layercache.yaml";
  // The node's config: its listener is the mirror; two registries besides docker.io's.
  write_file(cfg, "server:\n  listen:\n    - address: 127.0.0.1:" + std::to_string(p.port()) +
                      "\nupstreams:\n" +
                      upstream_yaml("docker.io", "https://registry-1.docker.io", true,
                                    "    aliases: [index.docker.io]\n") +
                      upstream_yaml("ghcr.io", "https://ghcr.io", false));
  std::filesystem::create_directories(root / "etc/containerd");
  write_file(root / "etc/containerd/config.toml",
             read_file(std::filesystem::path(DEPLOY_DIR) / "containerd/config.toml"));
  const auto daemon_json = root / "etc/docker/daemon.json";
  std::filesystem::create_directories(daemon_json.parent_path());
  const std::string original = "{\"log-level\": \"warn\"}\n";
  write_file(daemon_json, original);
  const auto hub = root / "etc/containerd/certs.d/docker.io/hosts.toml";
  const auto ghcr = root / "etc/containerd/certs.d/ghcr.io/hosts.toml";
  auto setup = [&](std::vector<std::string> more) {
    std::vector<std::string> argv{LAYERCACHECTL_PATH, "node",   "setup",      "--config",
                                  cfg.string(),       "--root", root.string()};
    argv.insert(argv.end(), more.begin(), more.end());
    return run_command(argv, 60s);
  };
  auto doctor = [&](std::vector<std::string> more = {}) {
    std::vector<std::string> argv{LAYERCACHECTL_PATH, "doctor", "--config",
                                  cfg.string(),       "--root", root.string()};
    argv.insert(argv.end(), more.begin(), more.end());
    return run_command(argv, 60s);
  };
  EXPECT_EQ(doctor().exit_code, 1);

  // A dry run shows the new files and the diff, and writes nothing.
  const auto dry = setup({"--containerd", "--docker", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find("would create " + hub.string()), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("+ [host.\"" + p.url() + "\"]"), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("- {\"log-level\": \"warn\"}"), std::string::npos) << dry.output;
  EXPECT_FALSE(std::filesystem::exists(hub));
  EXPECT_EQ(read_file(daemon_json), original);

  const auto first = setup({"--containerd", "--docker"});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("created      " + ghcr.string()), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("dockerd uses registry-mirrors for docker.io images only"),
            std::string::npos)
      << first.output;
  EXPECT_NE(first.output.find("SIGHUP"), std::string::npos) << first.output;
  EXPECT_EQ(read_file(daemon_json.string() + ".layercache-backup"), original);
  const auto mirrors = boost::json::parse(read_file(daemon_json)).at("registry-mirrors");
  EXPECT_EQ(mirrors, boost::json::array{p.url()});
  const std::string hub_text = read_file(hub);
  EXPECT_NE(hub_text.find("server = \"https://registry-1.docker.io\""), std::string::npos);

  // Again: nothing changes, not even the backup.
  const auto second = setup({"--containerd", "--docker"});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_EQ(second.output.find("created"), std::string::npos) << second.output;
  EXPECT_EQ(second.output.find("\nchanged "), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("unchanged    " + daemon_json.string()), std::string::npos);
  EXPECT_EQ(read_file(hub), hub_text);
  EXPECT_EQ(read_file(daemon_json.string() + ".layercache-backup"), original);

  // What setup wrote is what doctor wants, for every registry of the config.
  const auto good = doctor();
  EXPECT_EQ(good.exit_code, 0) << good.output;
  EXPECT_NE(good.output.find("ok       containerd: " + ghcr.string() + " sends ghcr.io pulls to " +
                             p.url()),
            std::string::npos)
      << good.output;

  // A hosts.toml it cannot merge safely is left as it was (exit 1), the others still done.
  const std::string broken = "server = \"https://ghcr.io\n";
  write_file(ghcr, broken);
  const auto refused = setup({"--containerd"});
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find(ghcr.string() + " not TOML that can be merged safely (line 1"),
            std::string::npos)
      << refused.output;
  EXPECT_EQ(read_file(ghcr), broken);
  EXPECT_NE(refused.output.find("unchanged    " + hub.string()), std::string::npos);
  const auto bad_doctor = doctor({"--containerd"});
  EXPECT_EQ(bad_doctor.exit_code, 1) << bad_doctor.output;
  EXPECT_NE(bad_doctor.output.find("is not valid TOML"), std::string::npos) << bad_doctor.output;

  EXPECT_EQ(setup({}).exit_code, 2) << "no runtime named";
  EXPECT_EQ(setup({"--docker", "--mirror", "http://127.0.0.1:5000/v2"}).exit_code, 2);
  const auto no_config = run_command({LAYERCACHECTL_PATH, "node", "setup", "--docker", "--config",
                                      (dir_.path() / "none.yaml").string()},
                                     60s);
  EXPECT_EQ(no_config.exit_code, 2) << no_config.output;
}

TEST_F(CtlTest, DoctorChecksALazyNodesProxyPluginSnapshotterAndFuse) {
  layercache_instance p("upstreams:\n" + upstream_yaml("up", upstream_.url(), true));
  const std::string mirror = p.url();
  const auto root = dir_.path() / "lazy";
  auto install = [&](const std::string& from, const std::string& to) {
    std::string text = read_file(std::filesystem::path(DEPLOY_DIR) / from);
    for (std::size_t at; (at = text.find("http://127.0.0.1:5000")) != std::string::npos;) {
      text.replace(at, std::string_view("http://127.0.0.1:5000").size(), mirror);
    }
    std::filesystem::create_directories((root / to).parent_path());
    write_file(root / to, text);
    return text;
  };
  auto doctor = [&] {
    return run_command({LAYERCACHECTL_PATH, "doctor", "--root", root.string(), "--mirror", mirror},
                       60s);
  };
  auto has = [](const command_result& r, const std::string& line) {
    return r.output.find(line) != std::string::npos;
  };
  // The lazy node of deploy/README.md: its containerd config, both registries' hosts.toml,
  // the snapshotter's flags file.
  install("docker/daemon.json", "etc/docker/daemon.json");
  const std::string config = install("containerd/config-stargz.toml", "etc/containerd/config.toml");
  install("containerd/certs.d/docker.io/hosts.toml", "etc/containerd/certs.d/docker.io/hosts.toml");
  install("containerd/certs.d/europe-docker.pkg.dev/hosts.toml",
          "etc/containerd/certs.d/europe-docker.pkg.dev/hosts.toml");
  const std::string flags = install("systemd/layercache-stargz.env", "etc/layercache/stargz.env");
  const auto socket = root / "run/layercache-stargz/stargz.sock";

  // The snapshotter not running, no FUSE device.
  const auto down = doctor();
  EXPECT_EQ(down.exit_code, 1) << down.output;
  EXPECT_TRUE(has(down,
                  "ok       lazy: containerd has the stargz snapshotter at "
                  "/run/layercache-stargz/stargz.sock"))
      << down.output;
  EXPECT_TRUE(has(down, "ok       lazy: the CRI plugin (Kubernetes) pulls with snapshotter stargz"))
      << down.output;
  EXPECT_TRUE(has(down, "missing  lazy: no socket at " + socket.string())) << down.output;
  EXPECT_TRUE(has(down, "missing  lazy: no " + (root / "dev/fuse").string())) << down.output;
  EXPECT_TRUE(has(down,
                  "ok       lazy: layercache-stargz reads the layers of docker.io, "
                  "europe-docker.pkg.dev through " +
                      mirror))
      << down.output;

  // Running (a gRPC server answers), a character device at /dev/fuse: nothing is missing.
  std::filesystem::create_directories(root / "dev");
  std::filesystem::create_symlink("/dev/null", root / "dev/fuse");
  {
    fake_grpc_socket snapshotter(socket, true);
    const auto up = doctor();
    EXPECT_EQ(up.exit_code, 0) << up.output;
    EXPECT_TRUE(has(up, "ok       lazy: layercache-stargz answers at " + socket.string()))
        << up.output;
    EXPECT_TRUE(has(up, "ok       lazy: " + (root / "dev/fuse").string() + " is there"))
        << up.output;
  }
  {
    // Something else listens there: it does not speak HTTP/2.
    fake_grpc_socket other(socket, false);
    const auto wrong = doctor();
    EXPECT_EQ(wrong.exit_code, 1) << wrong.output;
    EXPECT_TRUE(has(wrong, "missing  lazy: layercache-stargz does not answer at " +
                               socket.string() + ": closed without an HTTP/2 answer"))
        << wrong.output;
    // --no-probe reads files only.
    const auto files = run_command(
        {LAYERCACHECTL_PATH, "doctor", "--root", root.string(), "--mirror", mirror, "--no-probe"},
        60s);
    EXPECT_EQ(files.exit_code, 0) << files.output;
  }
  fake_grpc_socket snapshotter(socket, true);

  // The snapshotter reads docker.io's layers from Docker Hub while containerd pulls through
  // layercache; and from another mirror.
  write_file(root / "etc/layercache/stargz.env",
             "LAYERCACHE_STARGZ_FLAGS=\"-mirror europe-docker.pkg.dev=" + mirror + "\"\n");
  const auto direct = doctor();
  EXPECT_EQ(direct.exit_code, 1) << direct.output;
  EXPECT_TRUE(has(direct, "missing  lazy: containerd pulls docker.io through " + mirror +
                              " but layercache-stargz reads its layers from docker.io directly"))
      << direct.output;
  EXPECT_TRUE(has(direct, "-mirror docker.io=" + mirror)) << direct.output;
  write_file(root / "etc/layercache/stargz.env",
             "LAYERCACHE_STARGZ_FLAGS='--mirror=docker.io=127.0.0.1:1 -mirror "
             "europe-docker.pkg.dev=" +
                 mirror + "'\n");
  const auto elsewhere = doctor();
  EXPECT_EQ(elsewhere.exit_code, 1) << elsewhere.output;
  EXPECT_TRUE(has(elsewhere,
                  "missing  lazy: layercache-stargz reads docker.io's layers through "
                  "http://127.0.0.1:1, not through " +
                      mirror))
      << elsewhere.output;
  write_file(root / "etc/layercache/stargz.env", flags);

  // containerd 1.6's default disable_snapshot_annotations = true: CRI pulls are not lazy.
  auto without = [&](std::string text, std::string_view line) {
    const auto at = text.find(line);
    EXPECT_NE(at, std::string::npos) << line;
    if (at != std::string::npos) text.erase(at, line.size());
    write_file(root / "etc/containerd/config.toml", text);
  };
  without(config, "disable_snapshot_annotations = false");
  const auto annotations = doctor();
  EXPECT_EQ(annotations.exit_code, 1) << annotations.output;
  EXPECT_TRUE(has(annotations, "passes it no image labels")) << annotations.output;
  // No proxy plugin while the CRI plugin asks for stargz.
  without(config, "[proxy_plugins.stargz]");
  const auto no_proxy = doctor();
  EXPECT_EQ(no_proxy.exit_code, 1) << no_proxy.output;
  EXPECT_TRUE(has(no_proxy, "missing  lazy: " + (root / "etc/containerd/config.toml").string() +
                                " has no [proxy_plugins.stargz]"))
      << no_proxy.output;
}

}  // namespace
}  // namespace layercache::testing
