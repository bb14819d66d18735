// A throttling TCP relay for load tests: it makes a server on this machine look like a distant
// one. Each accepted connection is forwarded to a target; every piece of data read from one side
// is written to the other no earlier than its arrival time plus a one-way delay (so a round trip
// gains twice the delay), and no faster than a per-connection, per-direction byte rate (a token
// bucket). Half-closes are passed on (after the delay, behind the data before them); an error on
// either side closes both.
//
// Not a network emulator: no loss, no jitter, no shared bottleneck between connections. Its
// queue per direction is bounded (`window`), after which it stops reading, so a slow reader
// pushes back on the sender the way TCP flow control does.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace layercache::loadtest {

struct throttle_options {
  std::string listen_address = "127.0.0.1";
  std::uint16_t listen_port = 0;  // 0: any free port (see throttle::port)
  std::string target_host = "127.0.0.1";
  std::uint16_t target_port = 0;
  // Added to each direction: a request/response round trip gains 2 × delay.
  std::chrono::microseconds delay{0};
  // Waited before dialling the target, as a TCP handshake to a distant host would take.
  std::chrono::microseconds connect_delay{0};
  // Per connection and per direction; 0 means no cap.
  std::uint64_t bytes_per_second = 0;
  // Most bytes held per direction before the relay stops reading from the sender. It also caps
  // throughput at window / delay, like a TCP receive window; it is raised to twice the
  // bandwidth-delay product when that is larger.
  std::size_t window = std::size_t{8} * 1024 * 1024;
  // A connection with no data in either direction for this long is closed (0: never).
  std::chrono::seconds idle_timeout{300};
};

// Monotonic totals since the relay started.
struct throttle_counters {
  std::uint64_t connections = 0;        // accepted
  std::uint64_t active = 0;             // accepted and not yet closed
  std::uint64_t failed_connects = 0;    // the target refused or could not be reached
  std::uint64_t bytes_to_target = 0;    // written to targets
  std::uint64_t bytes_from_target = 0;  // written back to clients
};

// The relay, on a thread of its own. Not copyable or movable. port() and counters() may be
// called from any thread.
class throttle {
 public:
  // Resolves the target, binds the listener and starts relaying. Throws std::runtime_error
  // when the target cannot be resolved or the listener cannot be bound.
  explicit throttle(throttle_options options);
  // Stops: closes the listener and every connection, then joins the thread.
  ~throttle();  // NOLINT(bugprone-exception-escape): terminates if the join fails
  throttle(const throttle&) = delete;
  throttle& operator=(const throttle&) = delete;

  [[nodiscard]] std::uint16_t port() const;
  [[nodiscard]] throttle_counters counters() const;
  [[nodiscard]] const throttle_options& options() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace layercache::loadtest
