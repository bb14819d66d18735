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

namespace layercache::doctor {

struct options {
  std::filesystem::path root = "/";              // where /etc is looked up (tests: a temp dir)
  std::string mirror = "http://127.0.0.1:5000";  // layercache's address as runtimes see it
  bool probe_sockets = true;  // dial layercache-stargz's socket (off: only files are read)
};

// "" when a gRPC server answers at unix socket `path` (HTTP/2: it sends its SETTINGS frame
// after our connection preface) within `timeout`; else what went wrong.
[[nodiscard]] std::string grpc_answers(const std::filesystem::path& path,
                                       std::chrono::milliseconds timeout);

// The whole content of file `p`, or nullopt when it cannot be read.
[[nodiscard]] std::optional<std::string> read_text(const std::filesystem::path& p);

// Writes one line per finding ("ok", "note", "missing" + the snippet to add) to `out`;
// `probe` (optional) GETs a URL and returns its status, nullopt when unreachable. Returns 0
// when nothing is missing, else 1.
int run(const options& o, std::ostream& out,
        const std::function<std::optional<unsigned>(const std::string&)>& probe);

}  // namespace layercache::doctor
