// `layercachectl doctor`: inspects the node's runtime configuration (dockerd daemon.json,
// containerd config.toml and hosts.toml; on a lazy node containerd's stargz proxy plugin, the
// layercache-stargz socket and flags, /dev/fuse) and says what is missing for each runtime to
// pull through layercache, with the snippet to add.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace layercache::doctor {

// One upstream's chain as the config gives it: its mirrors, asked in order (or by hash), then
// the upstream itself (issue 21).
struct chain {
  std::string upstream;              // its name
  std::string origin;                // its URL
  std::string select;                // "ordered" or "hash"
  std::vector<std::string> mirrors;  // their URLs
};

struct options {
  std::filesystem::path root = "/";              // where /etc is looked up (tests: a temp dir)
  std::string mirror = "http://127.0.0.1:5000";  // layercache's address as runtimes see it
  bool probe_sockets = true;  // dial layercache-stargz's socket (off: only files are read)
  // Runtimes named on the command line: checked even when absent. Neither: each one present
  // (dockerd: daemon.json or docker.sock; containerd: config.toml or containerd.sock, but not
  // dockerd's own, whose config disables the CRI plugin), an absent one reported as not
  // installed, not as a problem.
  bool containerd = false;
  bool docker = false;
  // The registries whose hosts.toml must send pulls to the mirror (node setup's list).
  std::vector<std::string> registries = {"docker.io"};
  // Explicit files, as node setup takes them (not under root). Unset: config.toml's
  // config_path (else /etc/containerd/certs.d), /etc/docker/daemon.json, under root.
  std::optional<std::filesystem::path> hosts_dir;
  std::optional<std::filesystem::path> daemon_json;
  // The upstreams with mirrors (from the config): reported, each mirror's /v2/ probed.
  std::vector<chain> chains;
};

// "" when a gRPC server answers at unix socket `path` (HTTP/2: it sends its SETTINGS frame
// after our connection preface) within `timeout`; else what went wrong.
[[nodiscard]] std::string grpc_answers(const std::filesystem::path& path,
                                       std::chrono::milliseconds timeout);

// The whole content of file `p`, or nullopt when it cannot be read.
[[nodiscard]] std::optional<std::string> read_text(const std::filesystem::path& p);

// Writes one line per finding ("ok", "note", "missing" + the snippet to add; what node setup
// writes is what is checked: daemon/node_setup.hpp) to `out`;
// `probe` (optional) GETs a URL and returns its status, nullopt when unreachable. Returns 0
// when nothing is missing, else 1.
int run(const options& o, std::ostream& out,
        const std::function<std::optional<unsigned>(const std::string&)>& probe);

}  // namespace layercache::doctor
