// Runs blocking work (RocksDB, files) on a small dedicated thread pool, never on I/O threads.
// Include only from server/*.cpp.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <type_traits>
#include <utility>

namespace layercache {

class blocking_pool {
 public:
  explicit blocking_pool(unsigned threads) : pool_(threads) {}
  ~blocking_pool() { pool_.join(); }
  blocking_pool(const blocking_pool&) = delete;
  blocking_pool& operator=(const blocking_pool&) = delete;

  // Runs `f()` on the pool and resumes the caller on its own executor with the result.
  // `f` must not throw (data-plane code reports errors as values).
  template <typename F>
  boost::asio::awaitable<std::invoke_result_t<F&>> run(F f) {
    using result = std::invoke_result_t<F&>;
    // The callable is moved into co_spawn's own frame, which outlives the coroutine.
    co_return co_await boost::asio::co_spawn(
        pool_.get_executor(),
        [f = std::move(f)]() mutable -> boost::asio::awaitable<result> { co_return f(); },
        boost::asio::use_awaitable);
  }

 private:
  boost::asio::thread_pool pool_;
};

}  // namespace layercache
