// Route parser and upstream selection (server/route.hpp, server/upstream_select.hpp), both
// pure. The input is a request target; a parsed route's name is handed to select_upstream over
// two fixed configs (with and without a default upstream). Invariants: only a configured
// upstream is ever chosen, and neither the client's name nor the upstream repository has an
// empty, "." or ".." component.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "config/config.hpp"
#include "fuzz/check.hpp"
#include "oci/reference.hpp"
#include "server/route.hpp"
#include "server/upstream_select.hpp"

namespace {

using namespace layercache;

config::upstream make_upstream(std::string name, std::string scheme, std::string host,
                               std::uint16_t port, bool is_default) {
  config::upstream u;
  u.name = std::move(name);
  u.scheme = std::move(scheme);
  u.host = std::move(host);
  u.port = port;
  u.url = u.scheme + "://" + u.host + ":" + std::to_string(port);
  u.is_default = is_default;
  return u;
}

config::config make_config(bool with_default) {
  config::config c;
  auto hub = make_upstream("docker.io", "https", "registry-1.docker.io", 443, with_default);
  hub.aliases = {"index.docker.io", "registry-1.docker.io"};
  auto ghcr = make_upstream("ghcr.io", "https", "ghcr.io", 443, false);
  auto local = make_upstream("local", "http", "127.0.0.1", 5001, false);
  local.aliases = {"localhost:5001"};
  auto v6 = make_upstream("v6", "http", "::1", 5002, false);
  auto demo = make_upstream("demo", "http", "demo.internal", 80, false);
  c.upstreams = {hub, ghcr, local, v6, demo};
  return c;
}

const config::config& config_with_default() {
  static const config::config c = make_config(true);
  return c;
}

const config::config& config_without_default() {
  static const config::config c = make_config(false);
  return c;
}

bool has_bad_component(std::string_view name) {
  while (true) {
    const auto slash = name.find('/');
    const auto part = name.substr(0, slash);
    if (part.empty() || part == "." || part == "..") return true;
    if (slash == std::string_view::npos) return false;
    name.remove_prefix(slash + 1);
  }
}

void check_choice(const config::config& cfg, const server::route& r) {
  const auto result = server::select_upstream(cfg, r.name, r.ns);
  if (const auto* e = std::get_if<server::route_error>(&result)) {
    FUZZ_CHECK(e->status >= 400 && e->status < 500);
    return;
  }
  const auto& choice = std::get<server::upstream_choice>(result);
  bool configured = false;
  for (const auto& u : cfg.upstreams) configured = configured || choice.upstream == &u;
  FUZZ_CHECK(configured);
  FUZZ_CHECK(!choice.repository.empty());
  FUZZ_CHECK(!has_bad_component(choice.repository));
  FUZZ_CHECK(oci::is_valid_repository(choice.repository));
  if (r.ns) FUZZ_CHECK(choice.prefix.empty());
  if (!choice.prefix.empty()) {
    FUZZ_CHECK(choice.prefix == choice.upstream->name);
    FUZZ_CHECK(!choice.upstream->is_default);
    FUZZ_CHECK(r.name == choice.prefix + "/" + choice.repository);
  } else {
    FUZZ_CHECK(choice.repository == r.name);
  }
  if (!r.ns && choice.prefix.empty()) FUZZ_CHECK(choice.upstream->is_default);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view target(reinterpret_cast<const char*>(data), size);
  const auto parsed = server::parse_route(target);
  if (const auto* e = std::get_if<server::route_error>(&parsed)) {
    FUZZ_CHECK(e->status >= 400 && e->status < 500);
    FUZZ_CHECK(!e->code.empty());
    return 0;
  }
  const auto& r = std::get<server::route>(parsed);
  if (r.kind == server::route_kind::base) return 0;
  FUZZ_CHECK(!has_bad_component(r.name));
  FUZZ_CHECK(oci::is_valid_repository(r.name));
  switch (r.kind) {
    case server::route_kind::blob:
    case server::route_kind::referrers:
      FUZZ_CHECK(r.reference_is_digest());
      break;
    case server::route_kind::manifest:
      FUZZ_CHECK(r.reference_is_digest() || oci::is_valid_tag(r.reference));
      break;
    default:
      FUZZ_CHECK(r.reference.empty());
      break;
  }
  check_choice(config_with_default(), r);
  check_choice(config_without_default(), r);
  return 0;
}
