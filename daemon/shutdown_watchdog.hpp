// Bounds layercached's shutdown. Draining connections has its own deadline
// (timeouts.shutdown), but closing the store waits on RocksDB, whose background work can hang
// (facebook/rocksdb#11867); systemd and Kubernetes would then kill the daemon only after their
// grace period, with nothing said. This watchdog exits the process instead, after saying what
// shutdown was waiting on. The store needs no clean close to reopen consistent: the same as
// after SIGKILL (tests/unit/cache/store_crash_test.cpp).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace layercache::daemon {

// The exit status when shutdown did not finish in time.
inline constexpr int shutdown_timeout_status = 3;

// Thread-safe. Starts counting when constructed; if finish() has not been called within
// `limit`, logs an error naming the current phase and ends the process with
// shutdown_timeout_status (std::_Exit: no destructors, no atexit handlers).
class shutdown_watchdog {
 public:
  shutdown_watchdog(std::chrono::milliseconds limit, std::string_view first_phase);
  ~shutdown_watchdog();  // finish()
  shutdown_watchdog(const shutdown_watchdog&) = delete;
  shutdown_watchdog& operator=(const shutdown_watchdog&) = delete;

  // What shutdown does now, for the log line ("closing the store").
  void phase(std::string_view what);
  // Shutdown is done: the watchdog stops and never fires. Idempotent.
  void finish();

 private:
  void watch(std::chrono::milliseconds limit);

  std::mutex mu_;
  std::condition_variable cv_;
  std::string phase_;
  bool finished_ = false;
  std::thread thread_;  // last: started after the members it reads
};

}  // namespace layercache::daemon
