// Where a redirected upstream request may connect, and which Host an operations request may
// name (issue 25: a hostile upstream or a web page on the node must get nothing). Pure
// functions and a read-only table; include only from server/*.cpp (Asio address types).
#pragma once

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "asio/names.hpp"

namespace layercache::net {

// The kind of network an address is on. IPv4-mapped (and -compatible) IPv6 addresses are
// classified by their IPv4 address.
enum class address_class {
  global,      // anything not below
  loopback,    // 127.0.0.0/8, ::1
  private_,    // 10/8, 172.16/12, 192.168/16, 100.64/10 (shared), fc00::/7 (unique local)
  link_local,  // 169.254/16 (cloud metadata servers), fe80::/10
  reserved,    // 0/8, multicast, 240/4 and broadcast, ::, ff00::/8: never a place to connect to
};

[[nodiscard]] address_class classify(const asio::ip::address& a);
[[nodiscard]] std::string_view to_string(address_class c);

// layercache's own listening endpoints (client listeners and the operations listener). Filled
// once at start, before the workers run; read-only (so thread-safe) afterwards.
class own_endpoints {
 public:
  // A listener bound to an unspecified address (0.0.0.0, ::) is reachable at every local
  // address: loopback and the addresses of the host's interfaces (read once, here).
  void add(const asio::ip::tcp::endpoint& bound);
  [[nodiscard]] bool contains(const asio::ip::tcp::endpoint& ep) const;

 private:
  std::vector<asio::ip::tcp::endpoint> endpoints_;
  std::vector<asio::ip::address> local_addresses_;  // read at the first unspecified listener
  bool local_read_ = false;
};

// Where the redirect of an upstream request may go. Checked on every address a redirect
// target resolves to, at connect time, so a DNS name that points at 127.0.0.1 is caught too.
struct redirect_policy {
  // The class of the address the upstream itself answered from: a redirect may stay on a
  // network of that kind (an upstream on 10.0.0.5 may send blobs to 10.0.0.6).
  std::optional<address_class> upstream_class;
  bool allow_internal = false;         // upstreams[].allow_internal_redirects
  const own_endpoints* own = nullptr;  // never to these
};

// Whether a redirected request may connect to `ep` under `p`: never to layercache's own
// listeners or a reserved address; to a global address, always; to a loopback, private or
// link-local one only when the upstream is on one of that class or `allow_internal`.
[[nodiscard]] bool redirect_allowed(const redirect_policy& p, const asio::ip::tcp::endpoint& ep);

// Whether a request to the operations listener bound at `listen_host`:`port` may carry the
// Host header `host` (DNS rebinding: a page of another origin reaches a loopback port through
// a name it controls, and its Host says so). Allowed: the listener's address (any IP literal
// when it listens on an unspecified address), `localhost` when it is on loopback, and `names`
// (lowercase; "name" or "name:port"); a port, when given, must be the listener's. An empty or
// missing Host is refused.
[[nodiscard]] bool admin_host_allowed(std::string_view host, std::string_view listen_host,
                                      std::uint16_t port, const std::vector<std::string>& names);

// RLIMIT_NOFILE: the soft limit to ask for so that `needed` descriptors fit (never above
// `hard`, never below `soft`), and whether that is still short of `needed`.
struct nofile_plan {
  std::uint64_t soft = 0;
  bool short_of_needed = false;
};
[[nodiscard]] nofile_plan plan_nofile(std::uint64_t soft, std::uint64_t hard, std::uint64_t needed);

}  // namespace layercache::net
