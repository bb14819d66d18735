#include "tests/support/runtimes.hpp"

#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "tests/support/http_client.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

bool in_path(std::string_view program) {
  const char* path = std::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  // Daemons live in sbin on Debian; a non-login root shell may not have it in PATH.
  std::string dirs = std::string(rest) + ":/usr/local/sbin:/usr/sbin:/sbin";
  std::string_view all = dirs;
  while (!all.empty()) {
    const auto colon = all.find(':');
    const auto dir = all.substr(0, colon);
    if (!dir.empty() &&
        ::access((std::string(dir) + "/" + std::string(program)).c_str(), X_OK) == 0)
      return true;
    if (colon == std::string_view::npos) break;
    all.remove_prefix(colon + 1);
  }
  return false;
}

// Mount points at or under `root`, deepest first (from /proc/self/mountinfo, field 5).
std::vector<std::string> mounts_under(const std::filesystem::path& root) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  const std::string prefix = root.string();
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, devno, source_root, mount_point;
    fields >> id >> parent >> devno >> source_root >> mount_point;
    if (mount_point == prefix || mount_point.starts_with(prefix + "/")) out.push_back(mount_point);
  }
  std::sort(out.begin(), out.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

// Daemons may leave bind mounts (network namespaces, snapshots) behind when they are killed;
// removing the temp dir must never descend through one into what it shows.
void unmount_all_under(const std::filesystem::path& root) {
  for (int pass = 0; pass < 3; ++pass) {
    const auto mounts = mounts_under(root);
    if (mounts.empty()) return;
    for (const auto& m : mounts) ::umount2(m.c_str(), MNT_DETACH);
  }
}

bool wait_until_ok(const std::function<bool()>& probe, std::chrono::milliseconds limit,
                   child_process& process) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!process.running()) return false;
    if (probe()) return true;
    std::this_thread::sleep_for(200ms);
  }
  return false;
}

// A pid file's process, if it is still alive.
void kill_pid_file(const std::filesystem::path& pid_file) {
  std::ifstream in(pid_file);
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 1) return;
  if (::kill(pid, 0) != 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(100ms);
  ::kill(pid, SIGKILL);
}

}  // namespace

std::string runtime_unavailable(const std::vector<std::string>& programs) {
  if (::geteuid() != 0) return "runtime tests start dockerd/containerd and need root";
  for (const auto& p : programs) {
    if (!in_path(p)) return p + " is not installed (Debian: docker.io, containerd)";
  }
  return {};
}

env_vars no_internet_env() {
  const std::string dead = "http://127.0.0.1:9";
  std::string path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "/usr/bin:/bin";
  return {{"HTTPS_PROXY", dead},
          {"HTTP_PROXY", dead},
          {"https_proxy", dead},
          {"http_proxy", dead},
          {"NO_PROXY", "127.0.0.1,localhost,::1"},
          {"no_proxy", "127.0.0.1,localhost,::1"},
          {"PATH", path + ":/usr/local/sbin:/usr/sbin:/sbin"}};
}

// ---- dockerd ------------------------------------------------------------------------------

dockerd_process::dockerd_process(const std::string& mirror_url)
    : dir_(std::make_unique<temp_dir>("lc-dockerd")), socket_(dir_->path() / "docker.sock") {
  write_file(dir_->path() / "daemon.json",
             "{\n  \"registry-mirrors\": [\"" + mirror_url + "\"]\n}\n");
  start(dir_->path() / "daemon.json");
}

dockerd_process::dockerd_process(const config_file& config)
    : dir_(std::make_unique<temp_dir>("lc-dockerd")), socket_(dir_->path() / "docker.sock") {
  start(config.path);
}

void dockerd_process::reload() const {
  if (process_) ::kill(process_->pid(), SIGHUP);
}

void dockerd_process::start(const std::filesystem::path& config) {
  const auto& d = dir_->path();
  std::filesystem::create_directories(d / "cli");
  std::vector<std::string> argv{"dockerd",
                                "--iptables=false",
                                "--ip6tables=false",
                                "--ip-forward=false",
                                "--ip-masq=false",
                                "--bridge=none",
                                "--storage-driver=vfs",
                                "--data-root=" + (d / "data").string(),
                                "--exec-root=" + (d / "exec").string(),
                                "--pidfile=" + (d / "dockerd.pid").string(),
                                "--host=unix://" + socket_.string(),
                                "--config-file=" + config.string()};
  process_ = std::make_unique<child_process>(argv, d / "dockerd.log", no_internet_env());
  const bool up = wait_until_ok(
      [this] {
        return docker({"version", "--format", "{{.Server.Version}}"}, 10s).exit_code == 0;
      },
      60s, *process_);
  if (!up) {
    const std::string why = log();
    throw std::runtime_error("dockerd did not come up:\n" + why);
  }
}

dockerd_process::~dockerd_process() {
  if (process_) process_->stop(30s);
  // dockerd normally stops the containerd it supervises; a killed dockerd leaves it running.
  kill_pid_file(dir_->path() / "exec" / "containerd" / "containerd.pid");
  unmount_all_under(dir_->path());
}

command_result dockerd_process::docker(std::vector<std::string> args,
                                       std::chrono::milliseconds timeout) const {
  std::vector<std::string> argv{"docker", "--host", "unix://" + socket_.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, timeout, {{"DOCKER_CONFIG", (dir_->path() / "cli").string()}});
}

void dockerd_process::set_cli_credentials(const std::string& registry, const std::string& user,
                                          const std::string& password) const {
  write_file(dir_->path() / "cli" / "config.json",
             "{\"auths\": {\"" + registry + "\": {\"auth\": \"" +
                 base64_encode(user + ":" + password) + "\"}}}\n",
             0600);
}

std::string dockerd_process::log() const { return process_ ? process_->log() : std::string{}; }

// ---- containerd ---------------------------------------------------------------------------

containerd_process::containerd_process(std::string_view extra_config)
    : dir_(std::make_unique<temp_dir>("lc-containerd")), socket_(dir_->path() / "containerd.sock") {
  const auto& d = dir_->path();
  std::filesystem::create_directories(hosts_dir());
  std::ostringstream toml;
  toml << "version = 2\n"
       << "root = \"" << (d / "root").string() << "\"\n"
       << "state = \"" << (d / "state").string() << "\"\n"
       << "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
       << "[grpc]\n  address = \"" << socket_.string() << "\"\n"
       << "[ttrpc]\n  address = \"" << socket_.string() << ".ttrpc\"\n"
       << "[debug]\n  address = \"" << (d / "debug.sock").string() << "\"\n"
       << extra_config;
  write_file(d / "config.toml", toml.str());
  process_ = std::make_unique<child_process>(
      std::vector<std::string>{"containerd", "--config", (d / "config.toml").string()},
      d / "containerd.log", no_internet_env());
  const bool up =
      wait_until_ok([this] { return ctr({"version"}, 10s).exit_code == 0; }, 30s, *process_);
  if (!up) {
    const std::string why = log();
    throw std::runtime_error("containerd did not come up:\n" + why);
  }
}

containerd_process::~containerd_process() {
  if (process_) process_->stop(20s);
  unmount_all_under(dir_->path());
}

std::filesystem::path containerd_process::hosts_dir() const { return dir_->path() / "certs.d"; }

void containerd_process::add_mirror(std::string_view registry, std::string_view server_url,
                                    std::string_view mirror_url) const {
  const auto dir = hosts_dir() / std::string(registry);
  std::filesystem::create_directories(dir);
  std::ostringstream toml;
  toml << "server = \"" << server_url << "\"\n\n"
       << "[host.\"" << mirror_url << "\"]\n"
       << "  capabilities = [\"pull\", \"resolve\"]\n";
  write_file(dir / "hosts.toml", toml.str());
}

command_result containerd_process::ctr(std::vector<std::string> args,
                                       std::chrono::milliseconds timeout) const {
  return client("ctr", std::move(args), timeout);
}

command_result containerd_process::client(std::string_view program, std::vector<std::string> args,
                                          std::chrono::milliseconds timeout) const {
  std::vector<std::string> argv{std::string(program), "--address", socket_.string(), "--namespace",
                                "layercache-test"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, timeout, no_internet_env());
}

std::string containerd_process::log() const { return process_ ? process_->log() : std::string{}; }

// ---- the stargz snapshotter ---------------------------------------------------------------

std::string lazy_unavailable(const std::filesystem::path& snapshotter) {
  if (::geteuid() != 0) return "lazy-pull tests mount FUSE and start containerd: they need root";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "no usable /dev/fuse";
  for (std::string_view p : {"containerd", "ctr", "ctr-remote", "runc"}) {
    if (!in_path(p)) {
      return std::string(p) +
             " is not installed (Debian: containerd, runc, stargz-snapshotter; "
             "scripts/install-runtimes.sh)";
    }
  }
  if (snapshotter.empty() || ::access(snapshotter.c_str(), X_OK) != 0) {
    return "layercache-stargz was not built (needs golang-go and "
           "golang-github-containerd-stargz-snapshotter-dev at configure time)";
  }
  return {};
}

stargz_snapshotter_process::stargz_snapshotter_process(const std::filesystem::path& binary,
                                                       const stargz_options& options)
    : dir_(std::make_unique<temp_dir>("lc-stargz")), socket_(dir_->path() / "stargz.sock") {
  // setpriv --pdeathsig TERM: a test that crashes still stops it, and SIGTERM makes it
  // unmount its FUSE layers (SIGKILL would leave them behind, disconnected).
  std::vector<std::string> argv{"setpriv", "--pdeathsig", "TERM", binary.string()};
  argv.insert(argv.end(), {"-root", (dir_->path() / "root").string(), "-address", socket_.string(),
                           "-log-level", "debug"});
  if (!options.background_fetch) argv.emplace_back("-no-background-fetch");
  for (const auto& [registry, mirror] : options.mirrors) {
    argv.emplace_back("-mirror");
    argv.push_back(registry);
    argv.back().append("=").append(mirror);
  }
  process_ =
      std::make_unique<child_process>(argv, dir_->path() / "snapshotter.log", no_internet_env());
  const bool up =
      wait_until_ok([this] { return std::filesystem::exists(socket_); }, 30s, *process_);
  if (!up) {
    const std::string why = log();
    throw std::runtime_error("layercache-stargz did not come up:\n" + why);
  }
}

stargz_snapshotter_process::~stargz_snapshotter_process() {
  if (process_) process_->stop(20s);
  unmount_all_under(dir_->path());
}

std::string stargz_snapshotter_process::proxy_plugin_config() const {
  return "[proxy_plugins.stargz]\n  type = \"snapshot\"\n  address = \"" + socket_.string() +
         "\"\n";
}

std::string stargz_snapshotter_process::log() const {
  return process_ ? process_->log() : std::string{};
}

}  // namespace layercache::testing
