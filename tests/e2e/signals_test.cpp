// layercached as an operator runs it: SIGHUP reloads what can change live and refuses an
// invalid file; SIGTERM lets an in-flight download finish; every request leaves one JSON
// access-log line, and no secret reaches the log.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "oci/digest.hpp"
#include "server/cpu_limit.hpp"
#include "tests/support/exposition.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

#ifndef LAYERCACHED_PATH
#error "LAYERCACHED_PATH must name the layercached binary"
#endif

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t MiB = 1024 * 1024;

template <typename F>
bool eventually(F check, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (check()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return check();
}

struct daemon_options {
  std::string capacity = "1GiB";
  std::string level = "info";
  unsigned threads = 2;
  std::string upstream_auth;  // extra upstream YAML lines
  bool watch_config = false;  // --watch-config
};

class SignalsTest : public ::testing::Test {
 protected:
  void write_config(const daemon_options& o) {
    std::string yaml = "server:\n  threads: " + std::to_string(o.threads) +
                       "\n  listen:\n    - address: 127.0.0.1:" + std::to_string(port_) +
                       "\n  timeouts:\n    shutdown: 60s\n";
    yaml += "admin:\n  address: 127.0.0.1:" + std::to_string(admin_port_) + "\n";
    yaml += "log:\n  level: " + o.level + "\n";
    yaml += "prefetch:\n  eager_layers: never\n";  // sources in the access log are exact
    yaml += "cache:\n  path: " + (dir_.path() / "store").string() + "\n  capacity: " + o.capacity +
            "\n  chunk_size: 1MiB\n";
    yaml += "upstreams:\n  - name: origin\n    url: " + upstream_->url() + "\n    default: true\n" +
            o.upstream_auth;
    write_file(config_, yaml);
  }

  // `wrapper`: argv words before layercached's (e.g. a shell that moves itself into a cgroup
  // and execs the rest).
  void start(const daemon_options& o = {}, const env_vars& env = {},
             const std::vector<std::string>& wrapper = {}) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = free_port();
      admin_port_ = free_port();
      write_config(o);
      std::vector<std::string> argv = wrapper;
      for (std::string word :
           {std::string(LAYERCACHED_PATH), std::string("--config"), config_.string()}) {
        argv.push_back(std::move(word));
      }
      if (o.watch_config) argv.emplace_back("--watch-config");
      proc_ = std::make_unique<child_process>(argv, dir_.path() / "layercached.log", env);
      if (eventually(
              [&] {
                try {
                  return client_.get(admin("/readyz")).status == 200;
                } catch (const std::exception&) {
                  return !proc_->running();
                }
              },
              15s) &&
          proc_->running()) {
        return;
      }
      proc_->stop();
    }
    FAIL() << "layercached did not start:\n" << proc_->log();
  }

  std::string url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }
  std::string admin(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(admin_port_) + std::string(path);
  }
  double capacity() {
    const auto stats = boost::json::parse(client_.get(admin("/admin/stats")).body);
    return stats.at("store").at("capacity_bytes").to_number<double>();
  }
  double metric(std::string_view name, const std::map<std::string, std::string>& labels = {}) {
    return metric_value(parse_exposition(client_.get(admin("/metrics")).body), name, labels);
  }
  bool log_has(std::string_view text) { return proc_->log().find(text) != std::string::npos; }
  // Rewrites the config file with an invalid cache.capacity in place of `current`.
  void break_capacity(const std::string& current) {
    std::string text = read_file(config_);
    const std::string key = "capacity: " + current;
    const auto at = text.find(key);
    ASSERT_NE(at, std::string::npos);
    text.replace(at, key.size(), "capacity: lots");
    write_file(config_, text);
  }

  temp_dir dir_{"layercache-signals"};
  std::filesystem::path config_ = dir_.path() / "layercached.yaml";
  std::unique_ptr<registry_process> upstream_;
  std::unique_ptr<child_process> proc_;
  std::uint16_t port_ = 0;
  std::uint16_t admin_port_ = 0;
  http_client client_;
};

// A cgroup of our own whose CPU limit is `cpus` (cgroup v1's cpu controller, or v2 where the
// unified hierarchy is mounted at /sys/fs/cgroup), removed on destruction (after the processes
// in it have ended). `procs` is empty when none can be made here (not root, no controller).
struct cpu_limited_cgroup {
  explicit cpu_limited_cgroup(unsigned cpus) {
    namespace fs = std::filesystem;
    const std::string name = "layercache-test-" + std::to_string(::getpid());
    const std::string quota = std::to_string(cpus * 100000);
    std::error_code ec;
    if (fs::exists("/sys/fs/cgroup/cgroup.controllers")) {
      dir = fs::path("/sys/fs/cgroup") / name;
      write_quiet("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
      if (fs::create_directory(dir, ec) && write_quiet(dir / "cpu.max", quota + " 100000")) {
        procs = dir / "cgroup.procs";
      }
    } else if (fs::exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")) {
      dir = fs::path("/sys/fs/cgroup/cpu") / name;
      if (fs::create_directory(dir, ec) && write_quiet(dir / "cpu.cfs_period_us", "100000") &&
          write_quiet(dir / "cpu.cfs_quota_us", quota)) {
        procs = dir / "cgroup.procs";
      }
    }
  }
  ~cpu_limited_cgroup() {
    if (!dir.empty()) ::rmdir(dir.c_str());
  }
  cpu_limited_cgroup(const cpu_limited_cgroup&) = delete;
  cpu_limited_cgroup& operator=(const cpu_limited_cgroup&) = delete;

  static bool write_quiet(const std::filesystem::path& file, const std::string& text) {
    std::ofstream out(file);
    out << text;
    out.flush();
    return static_cast<bool>(out);
  }

  std::filesystem::path dir;
  std::filesystem::path procs;
};

// `server.threads: 0` in a cgroup that allows one CPU of this machine's two or more: one
// worker (a container's CPU limit, not the node's cores).
TEST_F(SignalsTest, ThreadsZeroStartsOneWorkerPerCpuTheCgroupAllows) {
  const unsigned everywhere = server::default_worker_count();  // this test's own cgroup
  if (everywhere < 2) GTEST_SKIP() << "one CPU allowed already: nothing to limit";
  cpu_limited_cgroup group(1);
  if (group.procs.empty()) GTEST_SKIP() << "no cgroup with a CPU limit can be made here";
  upstream_ = std::make_unique<registry_process>();
  daemon_options o;
  o.threads = 0;
  start(o, {}, {"sh", "-c", "echo $$ > " + group.procs.string() + " && exec \"$0\" \"$@\""});
  EXPECT_TRUE(log_has("server: 1 worker threads")) << proc_->log();
  proc_->stop();
  proc_.reset();

  start(o);  // outside the group: what this test's cgroup allows
  EXPECT_TRUE(log_has("server: " + std::to_string(everywhere) + " worker threads")) << proc_->log();
}

TEST_F(SignalsTest, SighupAppliesLiveSettingsAndRefusesAnInvalidFile) {
  upstream_ = std::make_unique<registry_process>();
  start();
  EXPECT_EQ(capacity(), 1024.0 * MiB);

  daemon_options next;
  next.capacity = "512MiB";
  next.level = "debug";
  next.threads = 3;  // needs a restart: reported, not applied
  write_config(next);
  ASSERT_EQ(::kill(proc_->pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] { return capacity() == 512.0 * MiB; }, 10s)) << proc_->log();
  EXPECT_TRUE(log_has("reload: log.level: info -> debug")) << proc_->log();
  EXPECT_TRUE(log_has("server.threads changed; it takes effect at the next restart"));
  EXPECT_EQ(metric("layercache_config_reloads_total", {{"outcome", "ok"}}), 1);

  // An invalid file: refused with the key and line, the running config kept.
  ASSERT_NO_FATAL_FAILURE(break_capacity("512MiB"));
  ASSERT_EQ(::kill(proc_->pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] { return log_has("reload refused"); }, 10s)) << proc_->log();
  EXPECT_TRUE(std::regex_search(proc_->log(), std::regex(R"(cache\.capacity: .*\(line \d+\))")))
      << proc_->log();
  EXPECT_EQ(metric("layercache_config_reloads_total", {{"outcome", "error"}}), 1);
  EXPECT_EQ(capacity(), 512.0 * MiB);
  EXPECT_EQ(client_.get(url("/v2/")).status, 200u);
  EXPECT_TRUE(proc_->running());
  EXPECT_EQ(proc_->stop(), 0);
}

// --watch-config: a changed file is loaded with no signal (a Kubernetes ConfigMap update), an
// invalid one refused and the running config kept, the next valid one loaded again.
TEST_F(SignalsTest, WatchConfigLoadsAChangedFileWithoutASignal) {
  upstream_ = std::make_unique<registry_process>();
  daemon_options o;
  o.watch_config = true;
  start(o);
  EXPECT_EQ(capacity(), 1024.0 * MiB);

  o.capacity = "512MiB";
  write_config(o);
  ASSERT_TRUE(eventually([&] { return capacity() == 512.0 * MiB; }, 15s)) << proc_->log();
  EXPECT_TRUE(log_has("changed: reloading")) << proc_->log();
  EXPECT_EQ(metric("layercache_config_reloads_total", {{"outcome", "ok"}}), 1);

  ASSERT_NO_FATAL_FAILURE(break_capacity("512MiB"));
  ASSERT_TRUE(eventually([&] { return log_has("reload refused"); }, 15s)) << proc_->log();
  EXPECT_EQ(metric("layercache_config_reloads_total", {{"outcome", "error"}}), 1);
  EXPECT_EQ(capacity(), 512.0 * MiB);

  o.capacity = "256MiB";
  write_config(o);
  ASSERT_TRUE(eventually([&] { return capacity() == 256.0 * MiB; }, 15s)) << proc_->log();
  // Each content was loaded once: no reload while the file stays the same.
  std::this_thread::sleep_for(5s);
  EXPECT_EQ(metric("layercache_config_reloads_total", {{"outcome", "ok"}}), 2);
  EXPECT_EQ(metric("layercache_config_reloads_total", {{"outcome", "error"}}), 1);
  EXPECT_EQ(proc_->stop(), 0);
}

// Reads an HTTP response from a raw socket: the header, then the body at the reader's pace.
class raw_download {
 public:
  raw_download(std::uint16_t port, const std::string& target) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // A small receive buffer keeps most of the body in the server until we read it.
    int small = 64 * 1024;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    timeval tv{30, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      throw std::runtime_error("connect failed");
    }
    const std::string req =
        "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd_, req.data(), req.size(), 0) != static_cast<ssize_t>(req.size())) {
      throw std::runtime_error("send failed");
    }
  }
  ~raw_download() { ::close(fd_); }
  raw_download(const raw_download&) = delete;
  raw_download& operator=(const raw_download&) = delete;

  // Reads up to `n` more bytes (header included); false at EOF or error.
  bool read_some(std::size_t n) {
    std::string buf(n, '\0');
    const ssize_t got = ::recv(fd_, buf.data(), n, 0);
    if (got <= 0) return false;
    data_.append(buf.data(), static_cast<std::size_t>(got));
    return true;
  }
  [[nodiscard]] std::string body() const {
    const auto end = data_.find("\r\n\r\n");
    return end == std::string::npos ? std::string() : data_.substr(end + 4);
  }
  [[nodiscard]] const std::string& data() const { return data_; }

 private:
  int fd_ = -1;
  std::string data_;
};

TEST_F(SignalsTest, SigtermLetsAnInFlightDownloadFinish) {
  upstream_ = std::make_unique<registry_process>();
  const auto img = make_image(image_format::oci, {64 * MiB}, 3);
  registry_pusher(upstream_->url()).push_image("big/app", "v1", img);
  start();
  const auto& layer = img.layers[0];

  raw_download download(port_, "/v2/big/app/blobs/" + layer.digest.str());
  while (download.body().size() < 2 * MiB) ASSERT_TRUE(download.read_some(64 * 1024));
  ASSERT_EQ(::kill(proc_->pid(), SIGTERM), 0);
  // Draining: no new work is taken (the listeners close), the download goes on.
  ASSERT_TRUE(eventually([&] { return log_has("draining"); }, 10s)) << proc_->log();
  EXPECT_TRUE(eventually(
      [&] {
        try {
          (void)client_.request("GET", url("/v2/"), {}, {}, 2s);
          return false;
        } catch (const std::exception&) {
          return true;
        }
      },
      10s));
  for (int i = 0; i < 100000 && download.read_some(256 * 1024); ++i) {
    std::this_thread::sleep_for(i % 16 == 0 ? 1ms : 0ms);  // a slow reader
  }
  EXPECT_EQ(download.data().substr(0, 15), "HTTP/1.1 200 OK");
  ASSERT_EQ(download.body().size(), layer.data.size());
  EXPECT_EQ(oci::digest_of(download.body()), layer.digest);
  const auto code = proc_->wait(30s);
  ASSERT_TRUE(code.has_value()) << "layercached did not exit after the download";
  EXPECT_EQ(*code, 0);
}

TEST_F(SignalsTest, EveryRequestLeavesOneJsonAccessLineAndNoSecret) {
  upstream_ = std::make_unique<registry_process>(
      registry_options{.htpasswd = std::pair<std::string, std::string>{"puller", "hunter2-pw"}});
  const auto img = make_image(image_format::oci, {1 * MiB + 5}, 4);
  registry_pusher(upstream_->url(), {}, std::pair<std::string, std::string>{"puller", "hunter2-pw"})
      .push_image("acc/app", "v1", img);
  daemon_options o;
  o.upstream_auth =
      "    auth:\n      type: basic\n      username: puller\n      password_env: UPSTREAM_PW\n";
  start(o, {{"UPSTREAM_PW", "hunter2-pw"}});

  const auto& layer = img.layers[0];
  ASSERT_EQ(client_
                .get(url("/v2/acc/app/manifests/v1"),
                     {{"Accept", "application/vnd.oci.image.manifest.v1+json"}})
                .status,
            200u);
  const auto got = client_.get(url("/v2/acc/app/blobs/" + layer.digest.str()));
  ASSERT_EQ(got.status, 200u);
  ASSERT_TRUE(got.body == layer.data);
  ASSERT_EQ(client_
                .get(url("/v2/acc/app/blobs/" + layer.digest.str()),
                     {{"Range", "bytes=0-99"}, {"Authorization", "Bearer client-secret-xyz"}})
                .status,
            206u);
  ASSERT_EQ(client_.get(url("/v2/acc/app/blobs/sha256:zz")).status, 400u);
  EXPECT_EQ(proc_->stop(), 0);

  const std::string log = proc_->log();
  EXPECT_EQ(log.find("hunter2-pw"), std::string::npos) << "the upstream password was logged";
  EXPECT_EQ(log.find("client-secret-xyz"), std::string::npos) << "a client's token was logged";
  std::vector<boost::json::object> lines;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("{")) continue;
    boost::system::error_code ec;
    auto v = boost::json::parse(line, ec);
    ASSERT_FALSE(ec) << "not JSON: " << line;
    ASSERT_TRUE(v.is_object()) << line;
    if (v.as_object().at("logger") == "access") lines.push_back(v.as_object());
  }
  ASSERT_EQ(lines.size(), 4u) << log;
  // A line is written when its request ends: the whole-blob GET still records the blob as
  // verified after its last byte went out, so the range GET's line may come before it.
  auto find_line = [&](std::string_view route, std::int64_t status) -> const boost::json::object& {
    for (const auto& l : lines) {
      if (l.at("route").as_string() == route && l.at("status").to_number<std::int64_t>() == status)
        return l;
    }
    ADD_FAILURE() << "no access line for " << route << " with status " << status << " in\n" << log;
    return lines[0];
  };
  const auto& blob = find_line("blob", 200);
  const auto& range = find_line("blob", 206);
  const auto& bad = find_line("other", 400);  // not a valid blob route
  EXPECT_EQ(blob.at("method"), "GET");
  EXPECT_EQ(blob.at("route"), "blob");
  EXPECT_EQ(blob.at("status"), 200);
  EXPECT_EQ(blob.at("bytes").to_number<double>(), static_cast<double>(layer.data.size()));
  EXPECT_EQ(blob.at("source"), "miss");
  EXPECT_EQ(blob.at("upstream"), "origin");
  EXPECT_TRUE(blob.contains("duration_ms"));
  EXPECT_TRUE(blob.contains("ttfb_ms"));
  EXPECT_TRUE(blob.contains("ts"));
  EXPECT_EQ(std::string(blob.at("client").as_string()).rfind("127.0.0.1:", 0), 0u);
  EXPECT_EQ(range.at("source"), "hit");
  EXPECT_EQ(range.at("range"), "bytes=0-99");
  EXPECT_EQ(bad.at("source"), "local");
}

}  // namespace
}  // namespace layercache::testing
