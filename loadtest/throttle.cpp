#include "loadtest/throttle.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <list>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace layercache::loadtest {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using error_code = boost::system::error_code;

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t read_size = std::size_t{64} * 1024;
constexpr std::size_t min_burst = std::size_t{16} * 1024;
constexpr auto watchdog_period = std::chrono::seconds(1);

struct atomic_counters {
  std::atomic<std::uint64_t> connections{0};
  std::atomic<std::uint64_t> active{0};
  std::atomic<std::uint64_t> failed_connects{0};
  std::atomic<std::uint64_t> bytes_to_target{0};
  std::atomic<std::uint64_t> bytes_from_target{0};
};

// Bytes read from one side, to be written to the other at `due`; `eof`: the sender half-closed.
struct piece {
  std::vector<char> data;
  clock_type::time_point due;
  bool eof = false;
};

// One direction of a relayed connection. The reader appends, the writer takes from the front;
// both run on the relay's single thread, so the queue needs no lock. A timer that never
// expires on its own serves as a wake-up: cancel() wakes whoever waits on it.
struct direction {
  explicit direction(const asio::any_io_executor& ex)
      : reader_wake(ex, clock_type::time_point::max()),
        writer_wake(ex, clock_type::time_point::max()),
        pace(ex) {}

  std::deque<piece> queue;
  std::size_t queued = 0;  // bytes in `queue`
  asio::steady_timer reader_wake;
  asio::steady_timer writer_wake;
  asio::steady_timer pace;  // the writer's wait for a due time or for tokens
};

struct connection {
  connection(tcp::socket c, atomic_counters& n)
      : client(std::move(c)),
        target(client.get_executor()),
        up(client.get_executor()),
        down(client.get_executor()),
        counters(n),
        last_activity(clock_type::now()) {
    counters.active.fetch_add(1, std::memory_order_relaxed);
  }
  ~connection() { counters.active.fetch_sub(1, std::memory_order_relaxed); }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // Ends both directions at once (an error, the idle timeout or the relay stopping).
  void close() {
    if (closed) return;
    closed = true;
    error_code ignored;
    client.close(ignored);
    target.close(ignored);
    for (direction* d : {&up, &down}) {
      d->reader_wake.cancel();
      d->writer_wake.cancel();
      d->pace.cancel();
    }
  }

  tcp::socket client;
  tcp::socket target;
  direction up;    // client → target
  direction down;  // target → client
  atomic_counters& counters;
  clock_type::time_point last_activity;
  bool closed = false;
};

using connection_ptr = std::shared_ptr<connection>;

struct relay_config {
  std::chrono::microseconds delay;
  std::uint64_t rate;  // bytes/s, 0: no cap
  std::size_t window;
  std::size_t burst;
};

// Reads `from` and queues what arrives with due time arrival + delay; at end of stream queues
// an eof piece. Stops reading while the queue holds `window` bytes.
asio::awaitable<void> read_side(connection_ptr c, bool upward, relay_config cfg) {
  tcp::socket& from = upward ? c->client : c->target;
  direction& d = upward ? c->up : c->down;
  std::vector<char> buf(read_size);
  while (!c->closed) {
    if (d.queued >= cfg.window) {
      d.reader_wake.expires_at(clock_type::time_point::max());
      auto [wait_ec] = co_await d.reader_wake.async_wait(use_nothrow);
      (void)wait_ec;  // woken by the writer or by close(): the loop re-checks both
      continue;
    }
    auto [ec, n] = co_await from.async_read_some(asio::buffer(buf), use_nothrow);
    if (c->closed) co_return;
    const auto now = clock_type::now();
    c->last_activity = now;
    piece p;
    p.due = now + cfg.delay;
    if (n > 0) {
      p.data.assign(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
      d.queued += n;
      d.queue.push_back(std::move(p));
      d.writer_wake.cancel();
      p = piece{{}, now + cfg.delay, false};
    }
    if (ec == asio::error::eof) {
      p.eof = true;
      d.queue.push_back(std::move(p));
      d.writer_wake.cancel();
      co_return;
    }
    if (ec) {
      c->close();
      co_return;
    }
  }
}

// Writes queued pieces to the other side once they are due, at most cfg.rate bytes/s (token
// bucket holding at most cfg.burst bytes); passes an eof on as shutdown(send).
asio::awaitable<void> write_side(connection_ptr c, bool upward, relay_config cfg) {
  tcp::socket& to = upward ? c->target : c->client;
  direction& d = upward ? c->up : c->down;
  auto& delivered = upward ? c->counters.bytes_to_target : c->counters.bytes_from_target;
  double tokens = static_cast<double>(cfg.burst);
  auto refilled = clock_type::now();
  while (!c->closed) {
    if (d.queue.empty()) {
      d.writer_wake.expires_at(clock_type::time_point::max());
      auto [wait_ec] = co_await d.writer_wake.async_wait(use_nothrow);
      (void)wait_ec;
      continue;
    }
    piece p = std::move(d.queue.front());
    d.queue.pop_front();
    d.queued -= p.data.size();
    d.reader_wake.cancel();
    if (clock_type::now() < p.due) {
      d.pace.expires_at(p.due);
      auto [pace_ec] = co_await d.pace.async_wait(use_nothrow);
      (void)pace_ec;
      if (c->closed) co_return;
    }
    if (p.eof) {
      error_code ignored;
      to.shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    std::size_t offset = 0;
    while (offset < p.data.size()) {
      std::size_t n = p.data.size() - offset;
      if (cfg.rate > 0) {
        n = std::min(n, cfg.burst);
        auto now = clock_type::now();
        const auto refill = [&] {
          const double elapsed = std::chrono::duration<double>(now - refilled).count();
          tokens = std::min(static_cast<double>(cfg.burst),
                            tokens + elapsed * static_cast<double>(cfg.rate));
          refilled = now;
        };
        refill();
        if (tokens < static_cast<double>(n)) {
          const double wait_s = (static_cast<double>(n) - tokens) / static_cast<double>(cfg.rate);
          d.pace.expires_after(std::chrono::duration_cast<clock_type::duration>(
              std::chrono::duration<double>(wait_s)));
          auto [pace_ec] = co_await d.pace.async_wait(use_nothrow);
          (void)pace_ec;
          if (c->closed) co_return;
          now = clock_type::now();
          refill();
        }
        tokens -= static_cast<double>(n);
      }
      auto [ec, written] =
          co_await asio::async_write(to, asio::buffer(p.data.data() + offset, n), use_nothrow);
      if (ec) {
        c->close();
        co_return;
      }
      offset += written;
      delivered.fetch_add(written, std::memory_order_relaxed);
      c->last_activity = clock_type::now();
    }
  }
}

// Closes a connection that has been idle for `idle`. Holds only a weak reference, so it ends
// when the connection does.
asio::awaitable<void> watchdog(std::weak_ptr<connection> weak, std::chrono::seconds idle) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (true) {
    timer.expires_after(watchdog_period);
    auto [ec] = co_await timer.async_wait(use_nothrow);
    auto c = weak.lock();
    if (ec || !c || c->closed) co_return;
    if (clock_type::now() - c->last_activity > idle) {
      c->close();
      co_return;
    }
  }
}

}  // namespace

struct throttle::impl {
  explicit impl(throttle_options o) : options(std::move(o)), acceptor(io) {}

  asio::awaitable<void> serve(tcp::socket client, tcp::endpoint target, relay_config cfg) {
    counters.connections.fetch_add(1, std::memory_order_relaxed);
    auto c = std::make_shared<connection>(std::move(client), counters);
    connections.push_back(c);
    if (options.connect_delay.count() > 0) {
      c->up.pace.expires_after(options.connect_delay);
      auto [pace_ec] = co_await c->up.pace.async_wait(use_nothrow);
      (void)pace_ec;
      if (c->closed) co_return;
    }
    auto [ec] = co_await c->target.async_connect(target, use_nothrow);
    if (ec || c->closed) {
      counters.failed_connects.fetch_add(1, std::memory_order_relaxed);
      c->close();
      co_return;
    }
    error_code ignored;
    c->target.set_option(tcp::no_delay(true), ignored);
    c->client.set_option(tcp::no_delay(true), ignored);
    c->last_activity = clock_type::now();
    const auto ex = c->client.get_executor();
    asio::co_spawn(ex, read_side(c, true, cfg), asio::detached);
    asio::co_spawn(ex, write_side(c, true, cfg), asio::detached);
    asio::co_spawn(ex, read_side(c, false, cfg), asio::detached);
    asio::co_spawn(ex, write_side(c, false, cfg), asio::detached);
    if (options.idle_timeout.count() > 0) {
      asio::co_spawn(ex, watchdog(c, options.idle_timeout), asio::detached);
    }
  }

  asio::awaitable<void> accept_loop(tcp::endpoint target, relay_config cfg) {
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
      if (stopping) co_return;
      if (ec) {
        // EMFILE and the like: back off a little instead of spinning.
        asio::steady_timer backoff(io, std::chrono::milliseconds(50));
        auto [backoff_ec] = co_await backoff.async_wait(use_nothrow);
        (void)backoff_ec;
        continue;
      }
      // Forget connections that have ended, so the list stays as long as the live ones.
      connections.remove_if([](const std::weak_ptr<connection>& w) { return w.expired(); });
      asio::co_spawn(io, serve(std::move(socket), target, cfg), asio::detached);
    }
  }

  void shut() {
    stopping = true;
    error_code ignored;
    acceptor.close(ignored);
    for (auto& w : connections) {
      if (auto c = w.lock()) c->close();
    }
    connections.clear();
  }

  throttle_options options;
  // Before `io`: connections still owned by coroutine frames are destroyed with the io_context
  // and update the counters then.
  atomic_counters counters;
  asio::io_context io;
  tcp::acceptor acceptor;
  std::list<std::weak_ptr<connection>> connections;  // only touched on the relay thread
  bool stopping = false;
  std::uint16_t port = 0;
  std::thread thread;
};

throttle::throttle(throttle_options options) : impl_(std::make_unique<impl>(std::move(options))) {
  auto& o = impl_->options;
  tcp::resolver resolver(impl_->io);
  error_code ec;
  const auto targets = resolver.resolve(o.target_host, std::to_string(o.target_port), ec);
  if (ec || targets.empty()) {
    throw std::runtime_error("throttle: cannot resolve " + o.target_host + ":" +
                             std::to_string(o.target_port) + ": " + ec.message());
  }
  const tcp::endpoint target = *targets.begin();
  const auto address = asio::ip::make_address(o.listen_address, ec);
  if (ec) throw std::runtime_error("throttle: bad listen address " + o.listen_address);
  const tcp::endpoint listen(address, o.listen_port);
  auto& acceptor = impl_->acceptor;
  acceptor.open(listen.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(listen, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("throttle: cannot listen on " + o.listen_address + ":" +
                             std::to_string(o.listen_port) + ": " + ec.message());
  }
  impl_->port = acceptor.local_endpoint().port();

  relay_config cfg{o.delay, o.bytes_per_second, o.window, read_size};
  if (o.bytes_per_second > 0) {
    // 20 ms worth of bytes per burst keeps the rate smooth without a timer per small write.
    cfg.burst = std::max<std::size_t>(min_burst, o.bytes_per_second / 50);
    const double bdp =
        static_cast<double>(o.bytes_per_second) * std::chrono::duration<double>(o.delay).count();
    cfg.window = std::max(cfg.window, static_cast<std::size_t>(2 * bdp));
  }
  asio::co_spawn(impl_->io, impl_->accept_loop(target, cfg), asio::detached);
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

// If posting (allocation) or joining fails there is nothing left to do but terminate.
throttle::~throttle() {  // NOLINT(bugprone-exception-escape): std::terminate is the outcome
  asio::post(impl_->io, [this] { impl_->shut(); });
  // The closed sockets and cancelled timers let every coroutine finish; stop() bounds the wait
  // should one of them still be queued.
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::uint16_t throttle::port() const { return impl_->port; }

const throttle_options& throttle::options() const { return impl_->options; }

throttle_counters throttle::counters() const {
  const auto& n = impl_->counters;
  return {n.connections.load(), n.active.load(), n.failed_connects.load(), n.bytes_to_target.load(),
          n.bytes_from_target.load()};
}

}  // namespace layercache::loadtest
