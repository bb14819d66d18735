// Real container runtimes for end-to-end tests: dockerd (Debian's docker.io) and containerd
// (with its `ctr` client), each started by the test as root with its own data, state and
// socket directories, talking only to loopback. Nothing here touches the machine's own
// /var/lib/docker, /run/containerd or ~/.docker.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/support/process.hpp"

namespace layercache::testing {

// Why runtime tests cannot run here ("" when they can): not root, or a program missing from
// PATH. Tests GTEST_SKIP with it; CI installs the packages and runs as root.
[[nodiscard]] std::string runtime_unavailable(const std::vector<std::string>& programs);

// A dead loopback proxy address. dockerd and containerd get it as HTTP(S)_PROXY so that any
// request that does not go to loopback (a fallback to registry-1.docker.io, say) fails at once
// instead of leaving the machine; Go's proxy logic never proxies loopback hosts.
[[nodiscard]] env_vars no_internet_env();

// dockerd with `registry-mirrors: [mirror_url]` (plain http allowed for loopback mirrors),
// vfs storage and no networking of its own (no bridge, no iptables), in a fresh temp dir.
// The constructor waits (at most 60 s) until the API answers; throws with dockerd's log when
// it does not. The destructor stops dockerd (SIGTERM, 30 s grace), then the containerd it
// spawned if it outlived dockerd, unmounts anything left under the temp dir and removes it.
class dockerd_process {
 public:
  explicit dockerd_process(const std::string& mirror_url);
  // The same, with the daemon.json at `config_file` as it is (the test prepared it).
  struct config_file {
    std::filesystem::path path;
  };
  explicit dockerd_process(const config_file& config);
  ~dockerd_process();
  dockerd_process(const dockerd_process&) = delete;
  dockerd_process& operator=(const dockerd_process&) = delete;

  // Runs the docker CLI against this daemon (its own DOCKER_CONFIG, so no user credentials).
  [[nodiscard]] command_result docker(std::vector<std::string> args,
                                      std::chrono::milliseconds timeout) const;
  // Gives the docker CLI credentials for `registry` (a config.json `auths` key, e.g.
  // "https://index.docker.io/v1/"), as `docker login` stores them: it sends them with each pull
  // of that registry's images.
  void set_cli_credentials(const std::string& registry, const std::string& user,
                           const std::string& password) const;
  [[nodiscard]] std::string log() const;
  // SIGHUP: dockerd reloads its config file (registry-mirrors among what it applies live).
  void reload() const;

 private:
  void start(const std::filesystem::path& config);

  std::unique_ptr<temp_dir> dir_;
  std::filesystem::path socket_;
  std::unique_ptr<child_process> process_;
};

// containerd with its root, state and sockets in a fresh temp dir (the CRI plugin disabled),
// plus a hosts dir for `ctr --hosts-dir`. `extra_config` is appended to its config.toml (e.g.
// a `[proxy_plugins.stargz]` table: stargz_proxy_plugin()). Waits (at most 30 s) until `ctr
// version` answers. The destructor stops it (SIGTERM, 20 s grace), unmounts what is left and
// removes the dir.
class containerd_process {
 public:
  explicit containerd_process(std::string_view extra_config = {});
  ~containerd_process();
  containerd_process(const containerd_process&) = delete;
  containerd_process& operator=(const containerd_process&) = delete;

  // Writes <hosts dir>/<registry>/hosts.toml: `server = server_url` and one
  // [host."<mirror_url>"] with capabilities pull and resolve.
  void add_mirror(std::string_view registry, std::string_view server_url,
                  std::string_view mirror_url) const;
  [[nodiscard]] std::filesystem::path hosts_dir() const;
  // Its gRPC socket (ctr --address).
  [[nodiscard]] const std::filesystem::path& socket() const { return socket_; }

  // Runs `ctr --address <socket> --namespace layercache-test <args>`.
  [[nodiscard]] command_result ctr(std::vector<std::string> args,
                                   std::chrono::milliseconds timeout) const;
  // The same with another ctr-compatible client (`ctr-remote`).
  [[nodiscard]] command_result client(std::string_view program, std::vector<std::string> args,
                                      std::chrono::milliseconds timeout) const;
  [[nodiscard]] std::string log() const;

 private:
  std::unique_ptr<temp_dir> dir_;
  std::filesystem::path socket_;
  std::unique_ptr<child_process> process_;
};

// ---- lazy pulling: the stargz snapshotter --------------------------------------------------

// Why lazy-pull tests cannot run here ("" when they can): not root, no /dev/fuse, or one of
// containerd, ctr, ctr-remote, runc missing, or `snapshotter` (the built layercache-stargz)
// not there.
[[nodiscard]] std::string lazy_unavailable(const std::filesystem::path& snapshotter);

struct stargz_options {
  // false: the snapshotter reads only what the container touches (plus footer, TOC and the
  // eStargz prefetch region); true: it also fetches every layer whole in the background.
  bool background_fetch = false;
  // REGISTRY=MIRROR pairs for `-mirror` (layer reads go to the mirror first).
  std::vector<std::pair<std::string, std::string>> mirrors;
};

// layercache-stargz (snapshotter/) with its root and socket in a fresh temp dir; waits (at
// most 30 s) until the socket exists. The destructor stops it (SIGTERM, 20 s grace: it
// unmounts its FUSE layers), unmounts whatever is left under its dir and removes the dir.
// Stop the containerd that uses it first.
class stargz_snapshotter_process {
 public:
  stargz_snapshotter_process(const std::filesystem::path& binary, const stargz_options& options);
  ~stargz_snapshotter_process();
  stargz_snapshotter_process(const stargz_snapshotter_process&) = delete;
  stargz_snapshotter_process& operator=(const stargz_snapshotter_process&) = delete;

  [[nodiscard]] const std::filesystem::path& socket() const { return socket_; }
  // containerd config: `[proxy_plugins.stargz]` with type "snapshot" and this socket.
  [[nodiscard]] std::string proxy_plugin_config() const;
  [[nodiscard]] std::string log() const;

 private:
  std::unique_ptr<temp_dir> dir_;
  std::filesystem::path socket_;
  std::unique_ptr<child_process> process_;
};

}  // namespace layercache::testing
