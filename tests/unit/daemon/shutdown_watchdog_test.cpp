#include "daemon/shutdown_watchdog.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace layercache::daemon {
namespace {

using namespace std::chrono_literals;

// A shutdown step that never ends (as RocksDB's Close() after a failed flush could).
[[noreturn]] void hang_forever() {
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock lock(mu);
  for (;;) cv.wait(lock);
}

TEST(ShutdownWatchdogDeathTest, AHungShutdownExitsNamingWhatItWaitedOn) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        shutdown_watchdog dog(200ms, "draining connections");
        dog.phase("closing the store");
        hang_forever();
      },
      ::testing::ExitedWithCode(shutdown_timeout_status),
      "shutdown did not finish within 200 ms: still closing the store");
}

TEST(ShutdownWatchdogTest, AFinishedShutdownIsNeverCutShort) {
  shutdown_watchdog dog(1ms, "draining connections");
  dog.finish();
  std::this_thread::sleep_for(20ms);  // past the limit: a watchdog that fired would have exited
  dog.finish();                       // idempotent
  SUCCEED();
}

}  // namespace
}  // namespace layercache::daemon
