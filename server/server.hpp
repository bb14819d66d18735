// The proxy server: listeners and worker threads. No Asio or Beast in this header, so main and
// tests include it cheaply.
//
// Workers: `server.threads` threads, each with its own io_context, connection pool and
// acceptors on every listener (SO_REUSEPORT lets the kernel spread connections). Nothing on
// the data path is shared between workers but the token cache and TLS contexts.
#pragma once

#include <cstdint>
#include <memory>
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

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace layercache::server
