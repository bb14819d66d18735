// `layercachectl node setup`: points a node's container runtimes at layercache. containerd gets
// one hosts.toml per registry layercache serves (<hosts dir>/<registry>/hosts.toml, a
// [host."<mirror>"] table tried before the registry itself); dockerd gets the mirror in
// daemon.json's "registry-mirrors" (docker.io only: dockerd mirrors nothing else).
//
// The core is pure: merge_hosts_toml and merge_daemon_json take a file's text and return its
// new text (the same bytes when nothing changes, so a second run writes nothing), keeping
// everything that is not layercache's; a file they cannot read safely is refused with a
// message and never rewritten. apply() is the thin file layer on top: backups, atomic
// renames, --dry-run. Single-threaded; no function throws but apply() on I/O it cannot do
// (it reports those as failures instead, see there).
#pragma once

#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace layercache::node_setup {

// One registry as containerd names it: its hosts dir entry and where containerd goes when
// layercache does not answer.
struct registry_host {
  std::string name;      // "docker.io", "europe-docker.pkg.dev", "127.0.0.1:5001"
  std::string server;    // "https://registry-1.docker.io": the upstream's URL
  std::string upstream;  // layercache's upstream name (messages); empty from --upstreams
};

// The registries layercache serves, by how images name them: each upstream's URL host[:port]
// (the port when it is not the scheme's), its name and its aliases when they look like registry
// hosts (a '.' or ':' in them, or
// "localhost"), Docker Hub's hosts folded into "docker.io" (containerd's name for them: it asks
// the mirror with ?ns=docker.io, which selects the upstream by name, alias or URL host). In
// config order, without duplicates.
[[nodiscard]] std::vector<registry_host> registry_hosts(const config::config& c);

// The same from host names given on the command line (--upstreams docker.io,ghcr.io): server
// https://<host> (Docker Hub: https://registry-1.docker.io).
[[nodiscard]] std::vector<registry_host> registry_hosts(const std::vector<std::string>& hosts);

// "docker.io" for Docker Hub's registry hosts, else `host` lowercased.
[[nodiscard]] std::string containerd_name(std::string_view host);

// The mirror URL runtimes use to reach layercache: its first listener, http or https by its
// TLS settings; a wildcard address (0.0.0.0, ::) becomes the loopback address.
[[nodiscard]] std::string mirror_url(const config::config& c);

// `text` as a mirror URL: http(s)://host[:port], no path, query or user info; returned without
// a trailing slash. nullopt when it is not one.
[[nodiscard]] std::optional<std::string> parse_mirror(std::string_view text);

// The result of a merge: the file's new text, or why the old one was refused.
struct merged {
  std::string text;                // the new content; the old bytes when nothing changes
  std::string error;               // non-empty: refused (text is empty), nothing may be written
  std::vector<std::string> notes;  // what the operator should know (kept settings, limits)
  [[nodiscard]] bool ok() const { return error.empty(); }
};

// The comment line above the tables node setup writes: a table under it whose host is not the
// mirror any more is an old mirror of layercache's, removed on the next run.
inline constexpr std::string_view table_marker =
    "# layercache mirror (layercachectl node setup; replaced when it runs again)";

// A containerd hosts.toml (`existing`: nullopt when there is no file) with `mirror` as a
// [host."<mirror>"] table with capabilities ["pull", "resolve"]: an existing table for the
// mirror is updated in place (its header line, other keys and subtables kept; override_path
// dropped: layercache routes by ?ns= and needs containerd's /v2/ paths), else a new one goes before
// the other [host.*] tables (containerd tries hosts in file order, then `server`). Other
// tables, keys and comments are kept byte for byte; `server` is added when the file has none
// (an existing one is kept, with a note when it is not `r.server`). Tables of an earlier
// mirror of layercache's (under table_marker) are removed. Refused: TOML it cannot split into
// tables safely (unterminated strings, arrays or headers; a table defined twice; the mirror's
// host table written with dotted keys or an inline table).
[[nodiscard]] merged merge_hosts_toml(const std::optional<std::string>& existing,
                                      const registry_host& r, std::string_view mirror);

// What doctor checks in a hosts.toml: "" when the file sends pulls to `mirror` first (a
// [host."<mirror>"] table with pull and resolve); else what is missing.
[[nodiscard]] std::string check_hosts_toml(const std::string& text, std::string_view mirror);

// dockerd's daemon.json (`existing`: nullopt when there is no file; empty or blank text reads as
// {}) with `mirror` first in "registry-mirrors" (dockerd tries them in order); every other key
// and mirror is kept. Unchanged bytes when the mirror is already listed; otherwise the
// document is written back with two-space indentation. Refused: text that is not a JSON object
// (dockerd's own parser takes no comments either), or "registry-mirrors" not an array of
// strings.
[[nodiscard]] merged merge_daemon_json(const std::optional<std::string>& existing,
                                       std::string_view mirror);

// Lines of `before` and `after` as a diff: "  " kept, "- " removed, "+ " added.
[[nodiscard]] std::string line_diff(std::string_view before, std::string_view after);

// containerd's config.toml: the CRI plugin's registry config_path (version 2's
// [plugins."io.containerd.grpc.v1.cri".registry] or version 3's
// [plugins."io.containerd.cri.v1.images".registry]); its first directory when it is a list.
// nullopt when it sets none.
[[nodiscard]] std::optional<std::string> containerd_config_path(const std::string& text);

struct options {
  bool containerd = false;
  bool docker = false;
  bool dry_run = false;
  std::filesystem::path root = "/";  // where the default /etc paths are looked up (tests)
  // Explicit files, taken as given (not under root). Unset: <root>/etc/containerd/config.toml's
  // config_path, else <root>/etc/containerd/certs.d; <root>/etc/docker/daemon.json.
  std::optional<std::filesystem::path> hosts_dir;
  std::optional<std::filesystem::path> daemon_json;
  std::filesystem::path containerd_config;  // empty: <root>/etc/containerd/config.toml
  std::vector<registry_host> registries;
  std::string mirror;
  // The config's default upstream is Docker Hub (dockerd's mirror requests carry no ns= and go
  // to the default upstream). nullopt: unknown (--upstreams).
  std::optional<bool> default_is_docker_hub;
};

// Does it: one line per file ("unchanged", "wrote", "would write" + the diff) and the notes
// on `out`; refusals and I/O failures on `err`. A file that changes is first copied to
// <file>.layercache-backup unless that exists (the backup keeps the file as it was before
// layercache's first change), then replaced by a rename. Returns 0 when every file is as it
// should be (or would be, --dry-run), 1 when one was refused or could not be written.
int apply(const options& o, std::ostream& out, std::ostream& err);

}  // namespace layercache::node_setup
