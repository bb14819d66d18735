#include "server/upstream_select.hpp"

#include <algorithm>
#include <cctype>

#include "oci/reference.hpp"

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

bool hub_name(std::string_view n) {
  return iequals(n, "docker.io") || iequals(n, "index.docker.io") ||
         iequals(n, "registry-1.docker.io") || iequals(n, "registry.hub.docker.com");
}

// The registry written at the start of `reference` (Docker's rule: a first component with '.'
// or ':', or "localhost"), or nullopt for a short name. Tags and digests hold no '/'.
std::optional<std::string_view> written_registry(std::string_view reference) {
  const auto slash = reference.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const auto first = reference.substr(0, slash);
  if (first.find_first_of(".:") == std::string_view::npos && first != "localhost") {
    return std::nullopt;
  }
  return first;
}

std::string configured_names(const config::config& cfg) {
  std::string names;
  for (const auto& u : cfg.upstreams) names += (names.empty() ? "" : ", ") + u.name;
  return names;
}

}  // namespace

bool is_docker_hub(const config::upstream& u) {
  if (hub_name(u.name) || hub_name(u.host)) return true;
  return std::any_of(u.aliases.begin(), u.aliases.end(), hub_name);
}

std::variant<upstream_choice, route_error> select_image_upstream(const config::config& cfg,
                                                                 std::string_view reference,
                                                                 const std::string& upstream) {
  const auto ref = oci::reference::parse(reference);
  if (!ref) return route_error{400, "NAME_INVALID", "not an image reference"};
  const auto registry = written_registry(reference);
  // The path as written: parse() gave a short single-component name Hub's "library/".
  std::string path = ref->repository;
  if (!registry && reference.find('/') == std::string_view::npos) {
    path = path.substr(std::string_view("library/").size());
  }
  std::optional<std::string> ns;
  if (!upstream.empty()) {
    ns = upstream;
  } else if (registry) {
    ns = std::string(*registry);
  }
  auto chosen = select_upstream(cfg, path, ns);
  if (auto* e = std::get_if<route_error>(&chosen)) {
    if (!upstream.empty()) {
      return route_error{
          400, "NAME_UNKNOWN",
          "no upstream is named " + upstream + " (configured: " + configured_names(cfg) + ")"};
    }
    if (registry) {
      e->message = std::string(*registry) +
                   " is not a configured upstream (configured: " + configured_names(cfg) + ")";
    }
    return chosen;
  }
  auto& choice = std::get<upstream_choice>(chosen);
  if (choice.repository.find('/') == std::string::npos && is_docker_hub(*choice.upstream)) {
    choice.repository = "library/" + choice.repository;
  }
  return chosen;
}

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
