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

}  // namespace layercache::server
