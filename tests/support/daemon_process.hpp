// layercached as a child process with a generated config, on a port and store that survive
// restarts (the port is chosen once with free_port()). For end-to-end tests of the binary:
// crashes, signals, a disk that fills.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "tests/support/process.hpp"

namespace layercache::testing {

struct daemon_options {
  std::filesystem::path binary;  // the layercached executable
  std::filesystem::path dir;     // config, logs; the store is dir/"store" unless cache_yaml sets it
  std::string upstream_url;      // the default upstream, "origin"
  // The lines under `cache:` (indented two spaces) besides `path`.
  std::string cache_yaml = "  capacity: 1GiB\n  chunk_size: 256KiB\n";
  std::string extra_yaml;             // appended at the top level (e.g. "prefetch: {...}\n")
  std::filesystem::path store;        // empty: dir/"store"
  std::chrono::seconds shutdown{10};  // server.timeouts.shutdown
  bool admin = false;  // an admin listener on a known port (admin_url()); else on port 0
};

class daemon_process {
 public:
  explicit daemon_process(daemon_options options);

  // First start: another process may take the free port before the daemon binds it, so a
  // start that fails is retried with another port (a few times). Throws with the logs.
  void start_first();
  // Restart on the same port and store. Throws with the log if it does not come up.
  void restart();

  // SIGKILL: no chance to flush, close or drain anything. Returns the exit status.
  int kill9();
  // SIGTERM: graceful drain; SIGKILL after `grace`. Returns the exit status (0 expected), or
  // 128 + SIGKILL when it had to be killed.
  int terminate(std::chrono::milliseconds grace = std::chrono::seconds(30));

  [[nodiscard]] bool running();
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The admin listener (/metrics, /admin/...), with daemon_options::admin.
  [[nodiscard]] std::string admin_url() const {
    return "http://127.0.0.1:" + std::to_string(admin_port_);
  }
  [[nodiscard]] std::filesystem::path store() const;
  // Every start's log so far.
  [[nodiscard]] std::string logs() const;

 private:
  bool try_start();

  daemon_options options_;
  std::uint16_t port_ = 0;
  std::uint16_t admin_port_ = 0;
  int starts_ = 0;
  std::string logs_;
  std::unique_ptr<child_process> proc_;
};

}  // namespace layercache::testing
