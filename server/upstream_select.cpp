#include "server/upstream_select.hpp"

#include <algorithm>
#include <cctype>

namespace layercache::server {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string host_port(const config::upstream& u) {
  const bool v6 = u.host.find(':') != std::string::npos;
  std::string h = v6 ? "[" + u.host + "]" : u.host;
  return h + ":" + std::to_string(u.port);
}

bool matches_ns(const config::upstream& u, std::string_view ns) {
  if (iequals(ns, u.name)) return true;
  for (const auto& a : u.aliases) {
    if (iequals(ns, a)) return true;
  }
  if (iequals(ns, host_port(u))) return true;
  const bool default_port =
      (u.scheme == "https" && u.port == 443) || (u.scheme == "http" && u.port == 80);
  return default_port && iequals(ns, u.host);
}

}  // namespace

std::variant<upstream_choice, route_error> select_upstream(const config::config& cfg,
                                                           std::string_view name,
                                                           const std::optional<std::string>& ns) {
  if (ns) {
    for (const auto& u : cfg.upstreams) {
      if (matches_ns(u, *ns)) return upstream_choice{&u, std::string(name), {}};
    }
    return route_error{403, "DENIED", "namespace is not a configured upstream of this mirror"};
  }
  const auto slash = name.find('/');
  if (slash != std::string_view::npos) {
    const auto first = name.substr(0, slash);
    for (const auto& u : cfg.upstreams) {
      // The default upstream is reached without a prefix; stripping its name would turn a
      // repository that merely starts with it ("demo/app" at upstream "demo") into another.
      if (first == u.name && !u.is_default) {
        return upstream_choice{&u, std::string(name.substr(slash + 1)), std::string(first)};
      }
    }
  }
  if (const auto* d = cfg.default_upstream()) return upstream_choice{d, std::string(name), {}};
  return route_error{404, "NAME_UNKNOWN", "no upstream is configured for this repository"};
}

}  // namespace layercache::server
