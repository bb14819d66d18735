// One client connection: reads requests, routes them, answers from upstream. Include only
// from server/*.cpp (brings in Asio).
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>

#include "asio/names.hpp"
#include "config/config.hpp"
#include "registry/upstream_client.hpp"

namespace layercache::metrics {
class registry;
}  // namespace layercache::metrics

namespace layercache::content {
class blob_source;
class manifest_cache;
}  // namespace layercache::content

namespace layercache::server {
class prefetcher;
}  // namespace layercache::server

namespace layercache::server {

// Something a worker can close when it drains.
class session_base {
 public:
  virtual ~session_base() = default;
  // Closes the connection if it is waiting for the next request; a busy session finishes
  // its response first and then sees `draining`.
  virtual void close_if_idle() = 0;
  virtual void close_now() = 0;
};

// What sessions of one worker thread share. Used only from that worker's thread, except the
// atomics.
struct worker_context {
  const config::config& cfg;
  std::map<std::string, std::unique_ptr<registry::upstream_client>, std::less<>>
      clients;  // by name
  std::unordered_set<session_base*> sessions;
  bool draining = false;
  std::atomic<std::uint64_t>& open_connections;  // across all workers
  content::blob_source* blobs =
      nullptr;  // shared by all workers; null: blobs pass straight through
  // Shared by all workers; null: manifests pass straight through.
  content::manifest_cache* manifests = nullptr;
  metrics::registry* metrics = nullptr;           // shared; null: not counted
  prefetcher* prefetch = nullptr;                 // shared; null: no profiles, no prefetch
  const std::atomic<bool>* access_log = nullptr;  // shared; null or false: no access log
};

// Serves one accepted connection until it closes. `tls` is the listener's context, or null
// for plain HTTP.
asio::awaitable<void> serve_connection(asio::ip::tcp::socket socket, asio::ssl::context* tls,
                                       worker_context& worker);

}  // namespace layercache::server
