// Preload: warm the store with an image, as if a client had pulled it — its manifest (the
// platform's manifest for an index) and every blob it lists, each read whole and verified
// against its digest. Or, with `start`, warm what a start of it reads: the manifests (a tag
// resolved now, so the runtime's HEAD within tag_ttl is answered here) and the replay of each
// image manifest's access profile, begun at once (a node imports its profiles and preloads at
// boot, before its runtime asks). Used by the admin API (and start-up preloads). Include only
// from server/*.cpp.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "asio/names.hpp"
#include "server/services.hpp"

namespace layercache::content {
class blob_source;
class manifest_cache;
}  // namespace layercache::content

namespace layercache::server {

class prefetcher;

// What a preload uses: the cache, the prefetcher and the upstream clients of the worker it
// runs on.
struct preload_services {
  const config::config& cfg;
  metrics::registry& metrics;
  upstream_clients& clients;  // of the worker the preload runs on
  content::blob_source& blobs;
  content::manifest_cache& manifests;
  prefetcher* prefetch = nullptr;  // null: prefetch is off (a start preload is refused)
};

struct preload_request {
  std::string reference;  // "[registry/]repository[:tag][@digest]"
  std::string upstream;   // configured upstream name; empty: chosen by the reference's registry
  std::string platform = "linux/amd64";  // "os/arch[/variant]" for an index, or "all"
  bool start = false;  // what a start reads (profile replays), not every blob whole
};

struct preload_result {
  bool ok = false;
  unsigned status = 200;  // HTTP status for the admin API when !ok (400, 403, 404, 502, ...)
  std::string error;      // why not ok
  std::string upstream;
  std::string digest;  // the manifest (or index) the reference resolved to
  std::uint64_t manifests = 0;
  std::uint64_t blobs = 0;
  std::uint64_t bytes = 0;          // blob bytes read
  std::uint64_t fetched_bytes = 0;  // of which came from upstream now
  // With `start`: image manifests whose profile replay began, and how many of them had a
  // profile held (the others look for one published next to the image, if configured).
  std::uint64_t replays = 0;
  std::uint64_t profiles_held = 0;
};

// Runs on the calling worker, the one whose upstream clients `with` holds.
boost::asio::awaitable<preload_result> preload(const preload_services& with, preload_request req);

// True when `platform` ("os/arch[/variant]") matches the index entry's platform fields.
[[nodiscard]] bool platform_matches(std::string_view platform, const std::string& os,
                                    const std::string& architecture, const std::string& variant);

}  // namespace layercache::server
