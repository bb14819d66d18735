// The operations listener (config `admin:`): Prometheus metrics, health, and the admin API.
// Plain HTTP, served on worker 0's io_context. Include only from server/*.cpp.
//
//   GET    /metrics                 Prometheus text exposition (token if metrics_need_token)
//   GET    /healthz                 200 while the process runs
//   GET    /readyz                  200 when the store is open and listeners are up, else 503
//   GET    /admin/stats             cache and server figures (JSON)
//   GET    /admin/blobs[?limit=N]   cached blobs, most recently used first (JSON)
//   DELETE /admin/blobs/<digest>    purge one blob's chunks
//   DELETE /admin/blobs             purge every blob's chunks
//   POST   /admin/preload           {"reference": "...", "upstream"?: "...", "platform"?: "...",
//                                     "what"?: "image"|"start", "async"?: bool}: the answer
//                                     when it ended; async: 202 {"id": ...} at once (Location)
//   GET    /admin/preload/<id>      an async preload: state (running, done, failed), manifests,
//                                   blobs, blobs_total, bytes, bytes_total; then the result
//   GET    /admin/resolve?reference=...[&upstream=...][&platform=...]
//                                   the image manifest a reference names for a platform
//                                   (digest, media_type; index: the index it came from)
//   GET    /admin/profiles          access profiles: manifest, runs, entries, bytes (JSON)
//   GET    /admin/profiles/<digest> export one profile (cache/profile.hpp's JSON document)
//   PUT    /admin/profiles/<digest> import one (replaces any; must name that manifest)
//   DELETE /admin/profiles/<digest> drop one
//
// /admin/* needs `Authorization: Bearer <token>` when admin.token_file is set. Every request
// must name the listener in its Host (its address, `localhost` on loopback, or admin.hosts):
// a page whose name was rebound to 127.0.0.1 is refused (403). A request that changes state
// (any method but GET and HEAD) needs `Content-Type: application/json` or the token, so a
// page's simple cross-site POST (text/plain, form data) is refused (415). At most
// admin.max_connections connections are open at once.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "asio/names.hpp"
#include "server/preload.hpp"
#include "server/services.hpp"

namespace layercache::cache {
class chunk_store;
}  // namespace layercache::cache

namespace layercache {
class blocking_pool;
}  // namespace layercache

namespace layercache::server {

// A preload started with "async": true, polled by id (GET /admin/preload/<id>). Shared by the
// handler that reports it and the coroutine that runs it; both on worker 0.
struct preload_job {
  std::string id;
  std::uint64_t serial = 0;  // creation order: the oldest ended jobs are forgotten first
  std::string reference;
  std::string platform;
  bool start = false;
  preload_progress progress;
  std::optional<preload_result> result;  // once it ended
};

struct admin_context {
  const config::config& cfg;
  metrics::registry& metrics;
  worker_context& worker;  // worker 0: admin connections are its sessions and drain with them
  cache::chunk_store* store = nullptr;  // null: cache disabled (so are blobs and preloads)
  blocking_pool* pool = nullptr;
  content::blob_source* blobs = nullptr;     // null: cache disabled
  prefetcher* prefetch = nullptr;            // null: prefetch off
  std::optional<preload_services> preloads;  // with worker 0's upstream clients; none: no cache
  const std::atomic<bool>& ready;
  std::uint16_t port = 0;  // the bound port (admin.port may be 0)
  std::uint64_t open = 0;  // connections open now (worker 0 only)
  // Async preloads by id, running and ended (worker 0 only; at most max_preload_jobs).
  std::map<std::string, std::shared_ptr<preload_job>> preload_jobs;
  std::uint64_t preload_serial = 0;
};

// Serves one operations connection; the caller counted it in `admin.open`, which this
// decrements when the connection ends.
asio::awaitable<void> serve_admin_connection(asio::ip::tcp::socket socket, admin_context& admin);

}  // namespace layercache::server
