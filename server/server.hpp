// The proxy server: listeners and worker threads. No Asio or Beast in this header, so main and
// tests include it cheaply.
//
// Workers: `server.threads` threads, each with its own io_context, connection pool and
// acceptors on every listener (SO_REUSEPORT lets the kernel spread connections). Nothing on
// the data path is shared between workers but the token cache and TLS contexts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace layercache::server {

class server {
 public:
  // Loads TLS material. Throws std::runtime_error when a certificate, key or CA file cannot
  // be used.
  explicit server(config::config cfg);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Binds every listener and starts the workers. Throws std::runtime_error when an address
  // cannot be bound. Call once.
  void start();

  // Bound ports, in the order of config.server.listen (useful with port 0).
  [[nodiscard]] std::vector<std::uint16_t> ports() const;

  // Graceful stop: stops accepting, closes idle connections, lets in-flight responses finish
  // for up to server.timeouts.shutdown, then closes the rest. Blocks until all workers have
  // stopped. Safe to call more than once, from any thread but a worker's.
  void stop();

  // Number of client connections open right now.
  [[nodiscard]] std::uint64_t open_connections() const;

  // The bound port of the admin listener (config `admin:`); 0 when it is disabled.
  [[nodiscard]] std::uint16_t admin_port() const;

  // Applies what can change while running (log level and access log, tag_ttl and max_stale,
  // cache capacity) from `next`, and logs a warning for each other difference (it needs a
  // restart). Returns a description of each change applied. Counts a successful reload.
  std::vector<std::string> reload(const config::config& next);
  // Counts a reload refused because the new file is invalid.
  void reload_failed();

  // The metrics exposition, as /metrics serves it.
  [[nodiscard]] std::string metrics_text();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace layercache::server
