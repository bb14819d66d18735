// What the sessions of every worker use, built once by the server (server.cpp), and what one
// worker's sessions share. Every service is there: with the cache off, manifests and blobs
// pass straight through; with prefetch off, nothing is recorded. Include only from
// server/*.cpp (brings in Asio).
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>

#include "asio/names.hpp"
#include "config/config.hpp"
#include "oci/digest.hpp"
#include "oci/manifest.hpp"
#include "oci/range.hpp"
#include "registry/upstream_client.hpp"
#include "server/access.hpp"

namespace layercache::metrics {
class registry;
}  // namespace layercache::metrics

namespace layercache::server {

class blob_handler;
class manifest_handler;

// What clients were sent and read, for access profiles and prefetch (server/prefetch.hpp).
// Thread-safe: every worker calls it.
class access_observer {
 public:
  // Why a replay of a manifest starts (manifest_served).
  enum class trigger {
    get,      // a client GOT it: recording window, profile replay, eager layers without one
    head,     // a HEAD answered from a stored manifest (containerd resolving a tag): only the
              // replay of a profile already held, one round trip before the GET that follows
    preload,  // a preload of what a start reads (admin API): the profile held, or the one
              // published next to the image; no window, no eager layers
  };
  virtual ~access_observer() = default;

  // Image manifest `digest` (`m` parsed from its `body_size` bytes) of `repository` through
  // `client` was served (or preloaded, see trigger); a replay it starts runs on `ex` (the
  // worker `client` belongs to). Only image manifests are passed, never an index.
  virtual void manifest_served(const asio::any_io_executor& ex, registry::upstream_client& client,
                               const std::string& repository, const oci::digest& digest,
                               std::string_view media_type, const oci::manifest& m,
                               std::size_t body_size, trigger why) = 0;
  // A client's request for tag `tag` of `repository` at `upstream` resolved to `manifest`.
  virtual void tag_seen(const oci::digest& manifest, const std::string& upstream,
                        const std::string& repository, const std::string& tag) = 0;
  // A client read `bytes` of blob `blob` (an empty interval is no read).
  virtual void touched(const oci::digest& blob, oci::byte_interval bytes) = 0;
};

// prefetch.enabled: false — records nothing, replays nothing.
class no_prefetch final : public access_observer {
 public:
  void manifest_served(const asio::any_io_executor&, registry::upstream_client&, const std::string&,
                       const oci::digest&, std::string_view, const oci::manifest&, std::size_t,
                       trigger) override {}
  void tag_seen(const oci::digest&, const std::string&, const std::string&,
                const std::string&) override {}
  void touched(const oci::digest&, oci::byte_interval) override {}
};

// Built once; shared by every worker (each service is thread-safe).
struct services {
  const config::config& cfg;
  metrics::registry& metrics;
  const std::atomic<bool>& access_log;  // false: no access log lines
  access_observer& observer;            // the prefetcher, or no_prefetch
  manifest_handler& manifests;          // through the manifest cache, or straight through
  blob_handler& blobs;                  // through the blob source, or straight through
  // This process's Via value (registry::make_via): a request that carries it came back here.
  std::string_view via{};
};

// The upstream clients of one worker, by configured name.
using upstream_clients =
    std::map<std::string, std::unique_ptr<registry::upstream_client>, std::less<>>;

// Something a worker can close when it drains.
class session_base {
 public:
  virtual ~session_base() = default;
  // Closes the connection if it is waiting for the next request; a busy session finishes
  // its response first and then sees `draining`.
  virtual void close_if_idle() = 0;
  virtual void close_now() = 0;
};

// What the sessions of one worker thread share. Used only from that worker's thread, except
// the atomics.
struct worker_context {
  const services& shared;
  upstream_clients clients;
  access_gates gates;  // of the upstreams with access: client
  std::unordered_set<session_base*> sessions;
  bool draining = false;
  std::atomic<std::uint64_t>& open_connections;  // across all workers
};

}  // namespace layercache::server
