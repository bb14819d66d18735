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
//   POST   /admin/preload           {"reference": "...", "upstream"?: "...", "platform"?: "..."}
//   GET    /admin/profiles          access profiles: manifest, runs, entries, bytes (JSON)
//   GET    /admin/profiles/<digest> export one profile (cache/profile.hpp's JSON document)
//   PUT    /admin/profiles/<digest> import one (replaces any; must name that manifest)
//   DELETE /admin/profiles/<digest> drop one
//
// /admin/* needs `Authorization: Bearer <token>` when admin.token_file is set.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "server/session.hpp"

namespace layercache::cache {
class chunk_store;
}  // namespace layercache::cache

namespace layercache::server {

class blocking_pool;

struct admin_context {
  const config::config& cfg;
  metrics::registry& metrics;
  worker_context& worker;               // worker 0: its upstream clients serve preloads
  cache::chunk_store* store = nullptr;  // null: cache disabled
  blocking_pool* pool = nullptr;
  const std::atomic<bool>& ready;
};

asio::awaitable<void> serve_admin_connection(asio::ip::tcp::socket socket, admin_context& admin);

}  // namespace layercache::server
