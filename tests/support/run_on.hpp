// Runs one coroutine on an io_context to its end, for tests that drive handlers and upstream
// clients on the test's own thread. Header-only.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <exception>
#include <functional>
#include <optional>

namespace layercache::testing {

// Spawns `call` on `io`, runs `io` until it has no more work (what the coroutine started
// finishes too), makes it usable again, and returns the coroutine's value; what it threw is
// rethrown.
template <typename T>
T run_on(boost::asio::io_context& io, const std::function<boost::asio::awaitable<T>()>& call) {
  std::optional<T> out;
  boost::asio::co_spawn(
      io, [&]() -> boost::asio::awaitable<void> { out.emplace(co_await call()); },
      [](const std::exception_ptr& e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  io.restart();
  return std::move(*out);
}

}  // namespace layercache::testing
