#include "server/server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "cache/chunk_store.hpp"
#include "log/log.hpp"
#include "server/blob_cache.hpp"
#include "server/manifest_cache.hpp"
#include "server/offload.hpp"
#include "server/session.hpp"

namespace layercache::server {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

std::unique_ptr<asio::ssl::context> make_server_tls(const config::tls_identity& id) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(id.cert_file, ec);
  if (ec) throw std::runtime_error("cannot load certificate " + id.cert_file + ": " + ec.message());
  ctx->use_private_key_file(id.key_file, asio::ssl::context::pem, ec);
  if (ec) throw std::runtime_error("cannot load key " + id.key_file + ": " + ec.message());
  return ctx;
}

}  // namespace

struct server::impl {
  struct worker {
    worker(const config::config& cfg, std::atomic<std::uint64_t>& open)
        : pool(io.get_executor()), context{cfg, {}, {}, false, open} {}
    asio::io_context io{1};
    connection_pool pool;
    worker_context context;
    std::vector<std::pair<asio::ip::tcp::acceptor, asio::ssl::context*>> acceptors;
    std::thread thread;
  };

  config::config cfg;
  token_cache tokens;
  // Declared before the workers: destroyed after them.
  std::unique_ptr<cache::chunk_store> store;
  std::unique_ptr<blocking_pool> blocking;
  std::unique_ptr<blob_cache> blobs;
  std::unique_ptr<manifest_cache> manifests;
  std::map<std::string, std::unique_ptr<asio::ssl::context>> upstream_tls;   // by upstream name
  std::map<std::string, std::unique_ptr<upstream_credentials>> credentials;  // by upstream name
  std::vector<std::unique_ptr<asio::ssl::context>> listener_tls;             // by listener index
  std::vector<std::unique_ptr<worker>> workers;
  std::vector<std::uint16_t> bound_ports;
  std::atomic<std::uint64_t> open{0};

  std::mutex mutex;
  std::condition_variable stopped_cv;
  unsigned running = 0;
  bool started = false;
  bool stopped = false;

  asio::awaitable<void> accept_loop(worker& w, asio::ip::tcp::acceptor& acceptor,
                                    asio::ssl::context* tls) {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        log::warn("server", "accept: ", ec.message());
        // Out of descriptors or similar: back off briefly instead of spinning.
        asio::steady_timer t(w.io, std::chrono::milliseconds(50));
        co_await t.async_wait(use_nothrow);
        continue;
      }
      if (open.load() >= cfg.server.max_connections) {
        log::warn("server", "connection limit (", cfg.server.max_connections, ") reached");
        continue;  // closes the socket
      }
      asio::co_spawn(w.io, serve_connection(std::move(socket), tls, w.context), asio::detached);
    }
  }

  void drain(worker& w) {
    w.context.draining = true;
    for (auto& [a, tls] : w.acceptors) {
      boost::system::error_code ec;
      a.close(ec);
    }
    // Copy: closing may end sessions, which erase themselves.
    const std::vector<session_base*> sessions(w.context.sessions.begin(), w.context.sessions.end());
    for (auto* s : sessions) s->close_if_idle();
  }

  void force_close(worker& w) {
    const std::vector<session_base*> sessions(w.context.sessions.begin(), w.context.sessions.end());
    for (auto* s : sessions) s->close_now();
  }
};

server::server(config::config cfg) : impl_(std::make_unique<impl>()) {
  impl_->cfg = std::move(cfg);
  for (const auto& u : impl_->cfg.upstreams) {
    impl_->upstream_tls[u.name] = make_client_tls(u.ca_file);
    impl_->credentials[u.name] = std::make_unique<upstream_credentials>(u);
  }
  for (const auto& l : impl_->cfg.server.listen) {
    impl_->listener_tls.push_back(l.tls ? make_server_tls(*l.tls) : nullptr);
  }
  const auto& c = impl_->cfg.cache;
  if (c.enabled) {
    impl_->store = cache::open_rocksdb_store(
        cache::store_options{c.path, c.capacity, c.block_cache, c.sync_writes});
    impl_->blocking = std::make_unique<blocking_pool>(c.io_threads);
    impl_->blobs = std::make_unique<blob_cache>(
        *impl_->store, *impl_->blocking,
        fill_settings{c.chunk_size, c.fetch_size, c.parallel_fetches, c.complete_partial});
    impl_->manifests =
        std::make_unique<manifest_cache>(*impl_->store, *impl_->blocking, c.tag_ttl, c.max_stale);
    log::info("server", "cache at ", c.path, ": ", impl_->store->used_bytes(), " of ", c.capacity,
              " bytes used");
  }
}

server::~server() { stop(); }

void server::start() {
  auto& m = *impl_;
  if (m.started) throw std::logic_error("server already started");
  m.started = true;
  unsigned threads = m.cfg.server.threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());

  for (unsigned i = 0; i < threads; ++i) {
    auto w = std::make_unique<impl::worker>(m.cfg, m.open);
    w->context.blobs = m.blobs.get();
    w->context.manifests = m.manifests.get();
    for (const auto& u : m.cfg.upstreams) {
      w->context.clients.emplace(
          u.name, std::make_unique<upstream_client>(u, w->pool, m.upstream_tls[u.name].get(),
                                                    m.tokens, *m.credentials[u.name]));
    }
    m.workers.push_back(std::move(w));
  }

  // Every worker accepts on every listener; the first binds (resolving port 0), the others
  // join the same port through SO_REUSEPORT.
  for (std::size_t li = 0; li < m.cfg.server.listen.size(); ++li) {
    const auto& l = m.cfg.server.listen[li];
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(l.host, ec);
    if (ec) throw std::runtime_error("bad listen address " + l.host);
    std::uint16_t port = l.port;
    for (auto& w : m.workers) {
      asio::ip::tcp::acceptor a(w->io);
      const asio::ip::tcp::endpoint ep(address, port);
      a.open(ep.protocol(), ec);
      if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) {
        int one = 1;
        if (::setsockopt(a.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
          ec.assign(errno, boost::system::system_category());
        }
      }
      if (!ec) a.bind(ep, ec);
      if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
      if (ec) {
        throw std::runtime_error("cannot listen on " + l.host + ":" + std::to_string(port) + ": " +
                                 ec.message());
      }
      port = a.local_endpoint().port();
      w->acceptors.emplace_back(std::move(a), m.listener_tls[li].get());
    }
    m.bound_ports.push_back(port);
    log::info("server", "listening on ",
              l.host.find(':') != std::string::npos ? "[" + l.host + "]" : l.host, ":", port,
              l.tls ? " (TLS)" : "");
  }

  m.running = static_cast<unsigned>(m.workers.size());
  for (auto& wp : m.workers) {
    auto* w = wp.get();
    for (auto& [a, tls] : w->acceptors) {
      asio::co_spawn(w->io, m.accept_loop(*w, a, tls), asio::detached);
    }
    w->thread = std::thread([&m, w] {
      for (;;) {
        try {
          w->io.run();
          break;
        } catch (const std::exception& e) {
          // A bug escaped a session; keep serving the others.
          log::error("server", "worker: unexpected exception: ", e.what());
        }
      }
      std::lock_guard lock(m.mutex);
      --m.running;
      m.stopped_cv.notify_all();
    });
  }
}

std::vector<std::uint16_t> server::ports() const { return impl_->bound_ports; }

std::uint64_t server::open_connections() const { return impl_->open.load(); }

void server::stop() {
  auto& m = *impl_;
  {
    std::lock_guard lock(m.mutex);
    if (!m.started || m.stopped) return;
    m.stopped = true;
  }
  for (auto& w : m.workers) {
    asio::post(w->io, [&m, w = w.get()] { m.drain(*w); });
  }
  {
    std::unique_lock lock(m.mutex);
    if (!m.stopped_cv.wait_for(lock, m.cfg.server.timeouts.shutdown,
                               [&] { return m.running == 0; })) {
      log::warn("server", "shutdown deadline passed; closing remaining connections");
      lock.unlock();
      for (auto& w : m.workers) {
        asio::post(w->io, [&m, w = w.get()] { m.force_close(*w); });
      }
      lock.lock();
      if (!m.stopped_cv.wait_for(lock, std::chrono::seconds(5), [&] { return m.running == 0; })) {
        for (auto& w : m.workers) w->io.stop();
      }
    }
  }
  for (auto& w : m.workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  log::info("server", "stopped");
}

}  // namespace layercache::server
