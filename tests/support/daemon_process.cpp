#include "tests/support/daemon_process.hpp"

#include <signal.h>

#include <stdexcept>
#include <thread>
#include <vector>

#include "tests/support/http_client.hpp"

namespace layercache::testing {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

namespace {
constexpr auto ready_timeout = 20s;
constexpr auto ready_poll_interval = 20ms;
constexpr auto exit_timeout = 60s;
}  // namespace

daemon_process::daemon_process(daemon_options options) : options_(std::move(options)) {
  fs::create_directories(options_.dir);
}

fs::path daemon_process::store() const {
  return options_.store.empty() ? options_.dir / "store" : options_.store;
}

std::string daemon_process::logs() const { return logs_ + (proc_ ? proc_->log() : ""); }

bool daemon_process::running() { return proc_ && proc_->running(); }

void daemon_process::start_first() {
  std::string failures;
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = free_port();
    if (options_.admin) admin_port_ = free_port();
    if (try_start()) return;
    failures += "attempt " + std::to_string(attempt) + ":\n" + proc_->log() + "\n";
    proc_.reset();
  }
  throw std::runtime_error("layercached did not start:\n" + failures);
}

void daemon_process::restart() {
  if (proc_) throw std::logic_error("restart() while the daemon is running");
  if (!try_start()) {
    const std::string log = proc_ ? proc_->log() : std::string();
    proc_.reset();
    throw std::runtime_error("layercached did not restart on port " + std::to_string(port_) +
                             ":\n" + log);
  }
}

int daemon_process::kill9() {
  ::kill(proc_->pid(), SIGKILL);
  const auto code = proc_->wait(exit_timeout);
  if (!code) throw std::runtime_error("layercached survived SIGKILL");
  logs_ += proc_->log();
  proc_.reset();
  return *code;
}

int daemon_process::terminate(std::chrono::milliseconds grace) {
  const int code = proc_->stop(grace);
  logs_ += proc_->log();
  proc_.reset();
  return code;
}

bool daemon_process::try_start() {
  const auto config = options_.dir / "layercached.yaml";
  std::string yaml = "server:\n  threads: 2\n  listen:\n    - address: 127.0.0.1:";
  yaml += std::to_string(port_) + "\n";
  yaml += "  timeouts:\n    shutdown: " + std::to_string(options_.shutdown.count()) + "s\n";
  yaml += "admin:\n  address: 127.0.0.1:" + std::to_string(admin_port_) + "\n";
  yaml += "log:\n  level: warn\n";
  yaml += "cache:\n  path: " + store().string() + "\n" + options_.cache_yaml;
  yaml += "upstreams:\n  - name: origin\n    url: " + options_.upstream_url + "\n";
  yaml += "    default: true\n" + options_.extra_yaml;
  write_file(config, yaml);
  proc_ = std::make_unique<child_process>(
      std::vector<std::string>{options_.binary.string(), "--config", config.string()},
      options_.dir / ("layercached." + std::to_string(++starts_) + ".log"));
  http_client client;
  const std::string v2 = url() + "/v2/";
  const auto deadline = clock::now() + ready_timeout;
  while (clock::now() < deadline) {
    if (!proc_->running()) return false;
    try {
      const auto r = client.request("GET", v2, {}, {}, 2s);
      if (r.status == 200 || r.status == 401) return proc_->running();
    } catch (const std::exception&) {
      // not listening yet
    }
    std::this_thread::sleep_for(ready_poll_interval);
  }
  return false;
}

}  // namespace layercache::testing
