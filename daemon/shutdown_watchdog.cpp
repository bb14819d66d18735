#include "daemon/shutdown_watchdog.hpp"

#include <cstdlib>

#include "log/log.hpp"

namespace layercache::daemon {

shutdown_watchdog::shutdown_watchdog(std::chrono::milliseconds limit, std::string_view first_phase)
    : phase_(first_phase), thread_([this, limit] { watch(limit); }) {}

shutdown_watchdog::~shutdown_watchdog() { finish(); }

void shutdown_watchdog::phase(std::string_view what) {
  std::lock_guard lock(mu_);
  phase_ = what;
}

void shutdown_watchdog::finish() {
  {
    std::lock_guard lock(mu_);
    finished_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void shutdown_watchdog::watch(std::chrono::milliseconds limit) {
  std::unique_lock lock(mu_);
  if (cv_.wait_for(lock, limit, [this] { return finished_; })) return;
  log::error("main", "shutdown did not finish within ", limit.count(), " ms: still ", phase_,
             "; exiting with status ", shutdown_timeout_status,
             " (the store reopens consistent, as after a crash)");
  std::_Exit(shutdown_timeout_status);
}

}  // namespace layercache::daemon
