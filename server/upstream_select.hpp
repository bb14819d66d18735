// Which configured upstream a request goes to. Pure: never resolves or dials anything, so a
// `ns=` naming a host that is not configured is refused here, before any network activity.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "config/config.hpp"
#include "server/route.hpp"

namespace layercache::server {

struct upstream_choice {
  const config::upstream* upstream = nullptr;
  std::string repository;  // the name at the upstream
  std::string prefix;      // path prefix that selected it ("" when ns or default chose it)
};

// Rules, in order:
// 1. `ns` present: the upstream whose name, alias, or URL host[:port] equals it
//    (case-insensitive; a default port may be omitted); none → 403 DENIED.
// 2. first path component equals a non-default upstream's name and more components follow:
//    that upstream, with the prefix stripped.
// 3. the default upstream; none configured → 404 NAME_UNKNOWN.
[[nodiscard]] std::variant<upstream_choice, route_error> select_upstream(
    const config::config& cfg, std::string_view name, const std::optional<std::string>& ns);

// True for an upstream that is Docker Hub: its name, an alias or its host is one of Hub's
// names (docker.io, index.docker.io, registry-1.docker.io, registry.hub.docker.com).
[[nodiscard]] bool is_docker_hub(const config::upstream& u);

// Where an image reference as an operator writes it ("team/app:v1", "alpine@sha256:…",
// "registry.example.com/team/app") goes (preload, the admin API's resolve, prefetch.preload),
// the way a client's request for the same image through layercache goes:
// - `upstream` not empty: rule 1 with ns = `upstream` (its name, an alias or host[:port]);
//   none → 400 NAME_UNKNOWN, naming the configured upstreams;
// - else a registry written in the reference (a first component with '.' or ':', or
//   "localhost"): rule 1 with ns = that registry (403 DENIED when none is configured);
// - else (a short name): rules 2 and 3, so "team/app" goes to the default upstream, not to
//   docker.io.
// The repository is the name as written after the registry; a single-component name gets
// Docker Hub's "library/" only when the chosen upstream is_docker_hub(). Errors for a text that
// is no image reference: 400 NAME_INVALID. Pure, like select_upstream.
[[nodiscard]] std::variant<upstream_choice, route_error> select_image_upstream(
    const config::config& cfg, std::string_view reference, const std::string& upstream);

}  // namespace layercache::server
