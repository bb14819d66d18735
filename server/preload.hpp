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
#include "oci/manifest.hpp"
#include "server/services.hpp"

namespace layercache::registry {
class upstream_client;
}  // namespace layercache::registry

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
  // Read between blobs (on the preload's worker): true ends the preload, failed (503). The
  // worker's `draining`, so a shutdown does not wait for a long preload's every blob.
  const bool* stop = nullptr;
};

// The platform layercached was built for ("linux/amd64" on x86-64): what a preload without
// one (the API's default, prefetch.preload) takes from an index.
constexpr const char* build_platform() {
#if defined(__x86_64__)
  return "linux/amd64";
#elif defined(__aarch64__)
  return "linux/arm64";
#elif defined(__arm__)
  return "linux/arm/v7";
#elif defined(__i386__)
  return "linux/386";
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
  return "linux/ppc64le";
#elif defined(__s390x__)
  return "linux/s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  return "linux/riscv64";
#else
  return "linux/amd64";
#endif
}

struct preload_request {
  // "[registry/]repository[:tag][@digest]"; a short name ("team/app:v1", "alpine") goes to
  // the default upstream, as a client's request for it through layercache would
  // (select_image_upstream).
  std::string reference;
  std::string upstream;  // configured upstream name (or alias, host); empty: by the reference
  std::string platform = build_platform();  // "os/arch[/variant]" for an index, or "all"
  bool start = false;  // what a start reads (profile replays), not every blob whole
};

// How far a preload is, updated as it runs (on its worker; readers on the same worker).
struct preload_progress {
  std::uint64_t manifests = 0;    // fetched and stored
  bool listed = false;            // every manifest read: the totals below are known
  std::uint64_t blobs_total = 0;  // blobs the platform manifests list (a shared one once)
  std::uint64_t bytes_total = 0;  // their sizes, as listed
  std::uint64_t blobs = 0;        // read whole and verified, or found verified
  std::uint64_t bytes = 0;        // blob bytes read, the blob being read included
};

struct preload_result {
  bool ok = false;
  unsigned status = 200;  // HTTP status for the admin API when !ok (400, 403, 404, 502, ...)
  std::string error;      // why not ok
  std::string upstream;
  std::string repository;  // the name at the upstream
  std::string digest;      // the manifest (or index) the reference resolved to
  std::uint64_t manifests = 0;
  std::uint64_t blobs = 0;
  std::uint64_t bytes = 0;          // blob bytes read
  std::uint64_t fetched_bytes = 0;  // of which came from upstream now
  // With `start`: image manifests whose profile replay began, and how many of them had a
  // profile held (the others look for one published next to the image, if configured).
  std::uint64_t replays = 0;
  std::uint64_t profiles_held = 0;
};

// Runs on the calling worker, the one whose upstream clients `with` holds. `progress`, when
// not null, is updated as the preload goes and must outlive it.
boost::asio::awaitable<preload_result> preload(const preload_services& with, preload_request req,
                                               preload_progress* progress = nullptr);

// An image manifest a reference resolved to for a platform: as fetched, and as parsed once.
struct resolved_manifest {
  oci::digest digest;
  std::string media_type;
  std::string bytes;
  oci::manifest parsed;
};

// What a reference names for a platform: the manifest (or index) it resolves to and the image
// manifests chosen from it (the reference's own, or the index entries matching the
// platform; indexes nested at most twice). Every manifest fetched is stored in the manifest
// cache (a tag gets its record), as a pull would store it; one already stored by digest is
// not asked for again. On failure `images` is empty and `failure` (status, error) says why.
struct resolved_image {
  preload_result failure;  // ok, upstream, repository, digest, manifests: as far as it came
  registry::upstream_client* client = nullptr;
  std::vector<resolved_manifest> images;
};
boost::asio::awaitable<resolved_image> resolve_image(const preload_services& with,
                                                     const preload_request& req,
                                                     preload_progress* progress = nullptr);

// True when `platform` ("os/arch[/variant]") matches the index entry's platform fields.
[[nodiscard]] bool platform_matches(std::string_view platform, const std::string& os,
                                    const std::string& architecture, const std::string& variant);

}  // namespace layercache::server
