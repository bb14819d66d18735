#include "registry/credentials.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <filesystem>
#include <fstream>
#include <thread>

namespace layercache::registry {
namespace {

using namespace std::chrono_literals;

// One worker: an io_context run by its own thread until the work given to it is done.
struct worker {
  asio::io_context io{1};
  std::optional<std::thread> thread;
  void start() {
    thread.emplace([this] { io.run(); });
  }
  ~worker() {
    if (thread) thread->join();
  }
};

struct joined_outcome {
  bool led = false;
  std::optional<fetch_result> result;
};

asio::awaitable<void> lead_then_finish(flight_table& table, std::atomic<int>& waiting,
                                       int expected_waiters, std::optional<std::string> answer,
                                       joined_outcome& out) {
  auto joined = co_await table.join("k", 10s);
  auto* claim = std::get_if<flight_table::lead>(&joined);
  out.led = claim != nullptr;
  if (claim == nullptr) co_return;
  flight_table::lead lead = std::move(*claim);
  // Finish only once every waiter is registered in the table (bounded wait). `waiting` counts
  // the waiters that began to join; one counted but not yet in the table would find no
  // flight after this one and lead instead.
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int i = 0; i < 500 && (waiting.load() < expected_waiters ||
                              table.waiters("k") < static_cast<std::size_t>(expected_waiters));
       ++i) {
    timer.expires_after(10ms);
    co_await timer.async_wait(asio::use_awaitable);
  }
  if (answer) lead.finish(*answer);
  // else: the lead is dropped unfinished
}

asio::awaitable<void> wait_for(flight_table& table, std::atomic<int>& waiting,
                               config::duration limit, joined_outcome& out) {
  ++waiting;
  auto joined = co_await table.join("k", limit);
  if (std::holds_alternative<flight_table::lead>(joined)) {
    out.led = true;
    co_return;
  }
  out.result = std::get<std::optional<fetch_result>>(std::move(joined));
}

TEST(FlightTable, WaitersOnOtherThreadsGetTheLeadersResult) {
  flight_table table;
  std::atomic<int> waiting{0};
  constexpr int kWaiters = 6;
  joined_outcome leader;
  std::vector<joined_outcome> waiters(kWaiters);
  worker lead_worker;
  // The leader joins first, on its own thread; waiters are spread over two more threads.
  asio::co_spawn(lead_worker.io,
                 lead_then_finish(table, waiting, kWaiters, std::string("the-token"), leader),
                 asio::detached);
  lead_worker.start();
  for (int i = 0; i < 500 && table.size() == 0; ++i) std::this_thread::sleep_for(2ms);
  ASSERT_EQ(table.size(), 1u);
  worker a;
  worker b;
  for (int i = 0; i < kWaiters; ++i) {
    auto& w = i % 2 == 0 ? a : b;
    asio::co_spawn(w.io, wait_for(table, waiting, 10s, waiters[static_cast<std::size_t>(i)]),
                   asio::detached);
  }
  a.start();
  b.start();
  lead_worker.thread->join();
  lead_worker.thread.reset();
  a.thread->join();
  a.thread.reset();
  b.thread->join();
  b.thread.reset();

  EXPECT_TRUE(leader.led);
  for (const auto& w : waiters) {
    EXPECT_FALSE(w.led);
    ASSERT_TRUE(w.result.has_value());
    ASSERT_TRUE(std::holds_alternative<std::string>(*w.result));
    EXPECT_EQ(std::get<std::string>(*w.result), "the-token");
  }
  EXPECT_EQ(table.size(), 0u);
}

TEST(FlightTable, AbandonedLeadWakesWaitersEmptyHanded) {
  flight_table table;
  std::atomic<int> waiting{0};
  joined_outcome leader;
  joined_outcome waiter;
  worker lead_worker;
  asio::co_spawn(lead_worker.io, lead_then_finish(table, waiting, 1, std::nullopt, leader),
                 asio::detached);
  lead_worker.start();
  for (int i = 0; i < 500 && table.size() == 0; ++i) std::this_thread::sleep_for(2ms);
  worker w;
  asio::co_spawn(w.io, wait_for(table, waiting, 10s, waiter), asio::detached);
  w.start();
  lead_worker.thread->join();
  lead_worker.thread.reset();
  w.thread->join();
  w.thread.reset();
  EXPECT_TRUE(leader.led);
  EXPECT_FALSE(waiter.led);
  EXPECT_FALSE(waiter.result.has_value());  // it retries itself
  EXPECT_EQ(table.size(), 0u);
}

TEST(FlightTable, WaiterGivesUpAtItsLimitAndNextCallerLeads) {
  flight_table table;
  asio::io_context io;
  std::optional<flight_table::lead> held;
  joined_outcome waiter;
  joined_outcome after;
  std::atomic<int> waiting{0};
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto joined = co_await table.join("k", 10s);
        held.emplace(std::move(std::get<flight_table::lead>(joined)));
        co_await wait_for(table, waiting, 50ms, waiter);  // the lead never finishes in time
        held->finish(upstream_failure{upstream_errc::auth_failed, "late"});
        held.reset();
        co_await wait_for(table, waiting, 50ms, after);
      },
      asio::detached);
  io.run_for(5s);
  EXPECT_FALSE(waiter.led);
  EXPECT_FALSE(waiter.result.has_value());
  EXPECT_TRUE(after.led);  // the flight is over: the next caller fetches
}

class HelperRun : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "layercache-helper-XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string script(const std::string& name, const std::string& body, mode_t mode = 0700) {
    const auto path = dir_ / ("docker-credential-" + name);
    std::ofstream(path) << "#!/bin/sh\n" << body;
    ::chmod(path.c_str(), mode);
    return path.string();
  }
  std::filesystem::path dir_;
};

TEST_F(HelperRun, PassesInputAndReadsOutput) {
  const auto p =
      script("echo", "[ \"$1\" = get ] || exit 9\nread host\nprintf '%s|%s' \"$host\" ok\n");
  const auto run = run_credential_helper(p, "registry.example:5000", 5s);
  EXPECT_FALSE(run.timed_out);
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_EQ(run.output, "registry.example:5000|ok");
}

TEST_F(HelperRun, ReportsExitStatusAndStderr) {
  const auto p = script("fail", "echo 'bad things happened' >&2\necho partial\nexit 4\n");
  const auto run = run_credential_helper(p, "h", 5s);
  EXPECT_EQ(run.exit_code, 4);
  EXPECT_EQ(run.error, "bad things happened");
  EXPECT_EQ(run.output, "partial\n");
}

TEST_F(HelperRun, KilledAfterTimeoutEvenWithChildrenHoldingPipes) {
  const auto p = script("hang", "sleep 30 &\nsleep 30\n");
  const auto started = std::chrono::steady_clock::now();
  const auto run = run_credential_helper(p, "h", 200ms);
  EXPECT_TRUE(run.timed_out);
  EXPECT_EQ(run.exit_code, -1);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
}

TEST_F(HelperRun, HelperThatIgnoresInputDoesNotKillUs) {
  const auto p = script("noread", "exit 0\n");
  const std::string big(1 << 20, 'x');  // more than a pipe holds
  const auto run = run_credential_helper(p, big, 5s);
  EXPECT_EQ(run.exit_code, 0);
}

TEST_F(HelperRun, FindsHelpersInDirOrPath) {
  const auto p = script("found", "exit 0\n");
  EXPECT_EQ(find_credential_helper("found", dir_.string()), p);
  EXPECT_EQ(find_credential_helper("absent", dir_.string()), "");
  script("notexec", "exit 0\n", 0600);
  EXPECT_EQ(find_credential_helper("notexec", dir_.string()), "");

  const char* old = std::getenv("PATH");
  const std::string saved = old != nullptr ? old : "";
  ::setenv("PATH", ("relative/dir:" + dir_.string()).c_str(), 1);
  EXPECT_EQ(find_credential_helper("found", ""), p);
  ::setenv("PATH", saved.c_str(), 1);
}

TEST(UpstreamFailure, StatusAndCode) {
  EXPECT_EQ((upstream_failure{upstream_errc::auth_failed, ""}.http_status()), 502u);
  EXPECT_EQ((upstream_failure{upstream_errc::auth_denied, ""}.http_status()), 401u);
  EXPECT_STREQ((upstream_failure{upstream_errc::auth_denied, ""}.oci_code()), "UNAUTHORIZED");
  EXPECT_EQ((upstream_failure{upstream_errc::timeout, ""}.http_status()), 504u);
  EXPECT_EQ((upstream_failure{upstream_errc::realm_forbidden, ""}.http_status()), 502u);
}

}  // namespace
}  // namespace layercache::registry
