#include "server/server.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "asio/offload.hpp"
#include "cache/chunk_store.hpp"
#include "content/blob_source.hpp"
#include "content/manifest_cache.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "net/address_policy.hpp"
#include "registry/artifacts.hpp"
#include "registry/credentials.hpp"
#include "registry/mirrors.hpp"
#include "server/admin.hpp"
#include "server/cpu_limit.hpp"
#include "server/handlers.hpp"
#include "server/prefetch.hpp"
#include "server/preload.hpp"
#include "server/published_profile.hpp"
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
  if (!id.client_ca_file.empty()) {
    // mTLS: a client without a certificate signed by one of these CAs fails the handshake.
    ctx->load_verify_file(id.client_ca_file, ec);
    if (ec) {
      throw std::runtime_error("cannot load client CA " + id.client_ca_file + ": " + ec.message());
    }
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    static constexpr unsigned char session_context[] = "layercache";
    SSL_CTX_set_session_id_context(ctx->native_handle(), session_context,
                                   sizeof session_context - 1);
  }
  return ctx;
}

log::level to_log_level(config::log_level l) {
  switch (l) {
    case config::log_level::debug:
      return log::level::debug;
    case config::log_level::info:
      return log::level::info;
    case config::log_level::warn:
      return log::level::warn;
    case config::log_level::error:
      return log::level::error;
  }
  return log::level::info;
}

std::string_view level_name(config::log_level l) {
  switch (l) {
    case config::log_level::debug:
      return "debug";
    case config::log_level::info:
      return "info";
    case config::log_level::warn:
      return "warn";
    case config::log_level::error:
      return "error";
  }
  return "?";
}

// A host as it goes before ":port": an IPv6 address in brackets.
std::string host_text(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

std::string seconds_text(config::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count()) + "s";
}

bool same_listeners(const std::vector<config::listener>& a,
                    const std::vector<config::listener>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].host != b[i].host || a[i].port != b[i].port ||
        a[i].tls.has_value() != b[i].tls.has_value()) {
      return false;
    }
    if (a[i].tls &&
        (a[i].tls->cert_file != b[i].tls->cert_file || a[i].tls->key_file != b[i].tls->key_file ||
         a[i].tls->client_ca_file != b[i].tls->client_ca_file)) {
      return false;
    }
  }
  return true;
}
// Whether the mirrors of an upstream differ in anything a restart must apply.
bool mirrors_differ(const config::upstream& u, const config::upstream& v) {
  if (u.mirrors.size() != v.mirrors.size() || u.mirror_select != v.mirror_select ||
      u.breaker.failures != v.breaker.failures || u.breaker.open_for != v.breaker.open_for) {
    return true;
  }
  for (std::size_t k = 0; k < u.mirrors.size(); ++k) {
    const auto& m = u.mirrors[k];
    const auto& n = v.mirrors[k];
    if (m.url != n.url || m.ca_file != n.ca_file || m.resolve != n.resolve ||
        m.timeouts.connect != n.timeouts.connect || m.timeouts.response != n.timeouts.response ||
        m.timeouts.read != n.timeouts.read || m.timeouts.body != n.timeouts.body ||
        m.auth.type != n.auth.type || m.auth.username != n.auth.username ||
        m.auth.password != n.auth.password || m.auth.docker_config != n.auth.docker_config) {
      return true;
    }
  }
  return false;
}

// Differences that only a restart applies, as key names.
std::vector<std::string> restart_only_changes(const config::config& a, const config::config& b) {
  std::vector<std::string> out;
  const auto& s = a.server;
  const auto& t = b.server;
  if (!same_listeners(s.listen, t.listen)) out.emplace_back("server.listen");
  if (s.threads != t.threads) out.emplace_back("server.threads");
  if (s.timeouts.request_header != t.timeouts.request_header ||
      s.timeouts.idle != t.timeouts.idle || s.timeouts.write != t.timeouts.write ||
      s.timeouts.shutdown != t.timeouts.shutdown) {
    out.emplace_back("server.timeouts");
  }
  if (s.max_connections != t.max_connections) out.emplace_back("server.max_connections");
  if (s.max_header_size != t.max_header_size) out.emplace_back("server.max_header_size");
  if (s.max_manifest_size != t.max_manifest_size) out.emplace_back("server.max_manifest_size");
  if (s.client_token != t.client_token) out.emplace_back("server.client_auth");
  if (a.admin.enabled != b.admin.enabled || a.admin.host != b.admin.host ||
      a.admin.port != b.admin.port || a.admin.token != b.admin.token ||
      a.admin.metrics_need_token != b.admin.metrics_need_token ||
      a.admin.max_connections != b.admin.max_connections || a.admin.hosts != b.admin.hosts) {
    out.emplace_back("admin");
  }
  const auto& c = a.cache;
  const auto& d = b.cache;
  if (c.enabled != d.enabled) out.emplace_back("cache.enabled");
  if (c.path != d.path) out.emplace_back("cache.path");
  if (c.chunk_size != d.chunk_size) out.emplace_back("cache.chunk_size");
  if (c.block_cache != d.block_cache) out.emplace_back("cache.block_cache");
  if (c.memory_cache != d.memory_cache) out.emplace_back("cache.memory_cache");
  if (c.min_free_disk != d.min_free_disk) out.emplace_back("cache.min_free_disk");
  if (c.max_disk != d.max_disk) out.emplace_back("cache.max_disk");
  if (c.sync_writes != d.sync_writes) out.emplace_back("cache.sync_writes");
  if (c.fetch_size != d.fetch_size) out.emplace_back("cache.fetch_size");
  if (c.parallel_fetches != d.parallel_fetches) out.emplace_back("cache.parallel_fetches");
  if (c.io_threads != d.io_threads) out.emplace_back("cache.io_threads");
  if (c.complete_partial != d.complete_partial) out.emplace_back("cache.complete_partial");
  const auto& p = a.prefetch;
  const auto& q = b.prefetch;
  if (p.enabled != q.enabled || p.window != q.window || p.concurrency != q.concurrency ||
      p.eager_layers != q.eager_layers || p.preload != q.preload || p.publish != q.publish ||
      p.fetch_published != q.fetch_published) {
    out.emplace_back("prefetch");
  }
  bool upstreams_differ = a.upstreams.size() != b.upstreams.size();
  for (std::size_t i = 0; !upstreams_differ && i < a.upstreams.size(); ++i) {
    const auto& u = a.upstreams[i];
    const auto& v = b.upstreams[i];
    upstreams_differ =
        u.name != v.name || u.url != v.url || u.is_default != v.is_default ||
        u.aliases != v.aliases || u.ca_file != v.ca_file ||
        u.max_idle_connections != v.max_idle_connections ||
        u.warm_connections != v.warm_connections || u.max_redirects != v.max_redirects ||
        u.timeouts.connect != v.timeouts.connect || u.timeouts.response != v.timeouts.response ||
        u.timeouts.read != v.timeouts.read || u.timeouts.body != v.timeouts.body ||
        u.allow_internal_redirects != v.allow_internal_redirects ||
        u.auth.realm_hosts != v.auth.realm_hosts || u.retry.attempts != v.retry.attempts ||
        u.retry.backoff != v.retry.backoff || u.retry.max_backoff != v.retry.max_backoff ||
        u.retry.max_retry_after != v.retry.max_retry_after || u.auth.type != v.auth.type ||
        u.auth.username != v.auth.username || u.auth.password != v.auth.password ||
        u.access != v.access || u.access_ttl != v.access_ttl || mirrors_differ(u, v);
  }
  if (upstreams_differ) out.emplace_back("upstreams");
  return out;
}

}  // namespace

struct server::impl {
  struct worker {
    worker(const services& shared, std::atomic<std::uint64_t>& open)
        : pool(io.get_executor()), context{shared, {}, {}, {}, false, open} {}
    asio::io_context io{1};
    registry::connection_pool pool;
    // The upstreams' mirrors on this worker (declared before the context: its clients point
    // to them).
    std::vector<std::unique_ptr<registry::mirror_clients>> mirrors;
    worker_context context;
    std::vector<std::pair<asio::ip::tcp::acceptor, asio::ssl::context*>> acceptors;
    std::thread thread;
  };

  config::config cfg;
  registry::token_cache tokens;
  // Declared before the workers: destroyed after them.
  std::unique_ptr<cache::chunk_store> store;
  std::unique_ptr<blocking_pool> blocking;
  std::unique_ptr<content::blob_source> blobs;
  std::unique_ptr<content::manifest_cache> manifests;
  std::unique_ptr<prefetcher> prefetch;
  std::map<std::string, std::unique_ptr<asio::ssl::context>> upstream_tls;  // by upstream name
  std::map<std::string, std::unique_ptr<registry::upstream_credentials>>
      credentials;                                                              // by upstream name
  std::map<std::string, std::unique_ptr<registry::redirect_memory>> redirects;  // by upstream name
  // By upstream name; only those with access: client.
  std::map<std::string, std::unique_ptr<access_parts>> access;
  // This process's Via value: sent to mirrors, and a request that carries it is a loop.
  std::string via = registry::make_via();
  // What an upstream's mirrors share across workers: their state and, per mirror, its TLS
  // context, credentials and redirect memory.
  struct mirror_parts {
    std::unique_ptr<registry::mirror_state> state;
    std::vector<std::unique_ptr<asio::ssl::context>> tls;
    std::vector<std::unique_ptr<registry::upstream_credentials>> credentials;
    std::vector<std::unique_ptr<registry::redirect_memory>> redirects;
  };
  std::map<std::string, mirror_parts> mirrors;  // by upstream name; only those with mirrors
  net::own_endpoints own;  // filled in start() before the workers run; read-only after
  std::vector<std::unique_ptr<asio::ssl::context>> listener_tls;  // by listener index
  // What sessions and upstream responses count into: still there when a worker's io_context,
  // stopped with coroutines in flight (a shutdown past its deadline), destroys their frames.
  std::atomic<std::uint64_t> open{0};
  metrics::registry metrics;
  std::atomic<bool> access_log{true};
  // What every session uses (declared before the workers: destroyed after them).
  no_prefetch no_observer;  // the observer when prefetch is off
  std::unique_ptr<blob_handler> blob_answers;
  std::unique_ptr<manifest_handler> manifest_answers;
  std::optional<services> shared;
  std::vector<std::unique_ptr<worker>> workers;
  // On worker 0 (declared after the workers: destroyed before their io_contexts).
  std::optional<asio::steady_timer> save_timer;  // saves closed recording windows
  std::vector<std::uint16_t> bound_ports;
  std::atomic<bool> ready{false};
  std::unique_ptr<admin_context> admin;
  std::optional<asio::ip::tcp::acceptor> admin_acceptor;  // on worker 0
  std::uint16_t admin_port = 0;
  std::mutex reload_mutex;
  config::config applied;  // the last config reload() applied (guarded by reload_mutex)

  std::mutex mutex;
  std::condition_variable stopped_cv;
  unsigned running = 0;
  bool started = false;
  bool stopped = false;

  // The TLS context, credentials and redirect memory of each upstream.
  void prepare_upstreams();
  // The TLS context of each listener; warns about listeners open to anyone.
  void prepare_listeners();
  // The store, blocking pool, blob source, manifest cache and prefetcher (cache.enabled).
  void open_cache();
  // Fills a metrics snapshot from the store, blob source and prefetcher.
  void collect(metrics::snapshot& s) const;

  // The handlers every session uses, through the cache when it is on.
  void make_services();
  // The workers, each with a client of each upstream.
  void make_workers(unsigned threads);
  // A client of upstream `u` on worker `w`, and the clients of its mirrors there.
  std::unique_ptr<registry::upstream_client> origin_client(worker& w, const config::upstream& u);
  std::unique_ptr<registry::mirror_clients> mirror_clients_on(worker& w, const config::upstream& u,
                                                              mirror_parts& parts);
  // What a preload on worker `w` uses (the cache is on).
  preload_services preloads_on(worker& w);
  // Every worker accepts on listener `li`: the first binds (resolving port 0), the others
  // join the same port through SO_REUSEPORT.
  void bind_listener(std::size_t li);
  // The admin listener and its accept loop, on worker 0.
  void open_admin();
  // The accept loops, and a thread running each worker.
  void run_workers();
  // Saving closed recording windows, and prefetch.preload, on worker 0.
  void start_prefetch_tasks();

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

  asio::awaitable<void> admin_loop(asio::ip::tcp::acceptor& acceptor) {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        asio::steady_timer t(acceptor.get_executor(), std::chrono::milliseconds(50));
        co_await t.async_wait(use_nothrow);
        continue;
      }
      // Worker 0 alone runs this loop and the admin sessions: a plain counter.
      if (admin->open >= cfg.admin.max_connections) {
        log::warn("admin", "connection limit (", cfg.admin.max_connections, ") reached");
        continue;  // closes the socket
      }
      ++admin->open;
      asio::co_spawn(acceptor.get_executor(), serve_admin_connection(std::move(socket), *admin),
                     asio::detached);
    }
  }

  // Saves the runs of closed recording windows every few seconds (worker 0).
  asio::awaitable<void> save_loop() {
    const auto& p = cfg.prefetch;
    const auto closes_after = p.quiet.count() > 0 ? std::min(p.window, p.quiet) : p.window;
    const auto period = std::clamp<config::duration>(closes_after / 2, std::chrono::seconds(1),
                                                     std::chrono::seconds(10));
    while (save_timer && !workers.front()->context.draining) {
      save_timer->expires_after(period);
      auto [ec] = co_await save_timer->async_wait(use_nothrow);
      if (ec) co_return;  // cancelled: draining
      auto saved = co_await prefetch->save_closed(false);
      if (cfg.prefetch.publish) co_await publish(saved);
    }
  }

  // prefetch.publish: each profile just saved goes to its manifest's upstream (worker 0's
  // client), as an OCI artifact next to the image.
  asio::awaitable<void> publish(const std::vector<saved_profile>& saved) {
    auto& clients = workers.front()->context.clients;
    for (const auto& s : saved) {
      auto it = clients.find(s.upstream);
      if (it == clients.end()) continue;
      const registry::artifact_subject subject{s.manifest, s.media_type, s.size};
      const std::string type(profile_artifact_type);
      const std::string error =
          co_await registry::push_artifact(*it->second, s.repository, subject, type, s.json);
      prefetch->count_publish(error.empty());
      if (error.empty()) {
        log::info("prefetch", "published the profile of ", s.manifest.str(), " to ", s.upstream,
                  "/", s.repository);
      } else {
        log::warn("prefetch", "publishing the profile of ", s.manifest.str(), " to ", s.upstream,
                  " failed: ", error);
      }
    }
  }

  // prefetch.preload: each image warmed once at start-up, one after another.
  asio::awaitable<void> preload_list(worker& w) {
    for (const auto& reference : cfg.prefetch.preload) {
      if (w.context.draining) co_return;
      preload_request req;
      req.reference = reference;
      const preload_services with = preloads_on(w);
      const auto r = co_await preload(with, std::move(req));
      if (r.ok) {
        log::info("prefetch", "preloaded ", reference, " (", r.digest, "): ", r.blobs, " blobs, ",
                  r.bytes, " bytes, ", r.fetched_bytes, " fetched");
      } else {
        log::warn("prefetch", "preloading ", reference, " failed: ", r.error);
      }
    }
  }

  void drain(worker& w) {
    ready = false;
    w.context.draining = true;
    if (&w == workers.front().get() && admin_acceptor) {
      boost::system::error_code ec;
      admin_acceptor->close(ec);
    }
    if (&w == workers.front().get() && save_timer) save_timer->cancel();
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
  impl_->prepare_upstreams();
  impl_->prepare_listeners();
  if (impl_->cfg.cache.enabled) impl_->open_cache();
  impl_->access_log = impl_->cfg.log.access;
  impl_->applied = impl_->cfg;
  impl_->metrics.on_collect([m = impl_.get()](metrics::snapshot& s) { m->collect(s); });
}

void server::impl::prepare_upstreams() {
  // With one access: client upstream, every upstream gets a gate (server/access.hpp).
  const bool any_client_access =
      std::any_of(cfg.upstreams.begin(), cfg.upstreams.end(),
                  [](const auto& u) { return u.access == config::access_mode::client; });
  for (const auto& u : cfg.upstreams) {
    upstream_tls[u.name] = registry::make_client_tls(u.ca_file);
    credentials[u.name] = std::make_unique<registry::upstream_credentials>(u);
    redirects[u.name] = std::make_unique<registry::redirect_memory>();
    if (any_client_access) access[u.name] = std::make_unique<access_parts>(u);
    if (u.mirrors.empty()) continue;
    auto& parts = mirrors[u.name];
    parts.state = std::make_unique<registry::mirror_state>(u, via);
    for (std::size_t k = 0; k < parts.state->size(); ++k) {
      const auto& endpoint = parts.state->endpoint(k);
      parts.tls.push_back(registry::make_client_tls(endpoint.ca_file));
      parts.credentials.push_back(std::make_unique<registry::upstream_credentials>(endpoint));
      parts.redirects.push_back(std::make_unique<registry::redirect_memory>());
      parts.state->set_metrics(k, &metrics.mirror(u.name, parts.state->label(k)));
    }
  }
}

void server::impl::prepare_listeners() {
  for (const auto& l : cfg.server.listen) {
    listener_tls.push_back(l.tls ? make_server_tls(*l.tls) : nullptr);
    if (!config::is_loopback(l.host) && cfg.server.client_token.empty() &&
        (!l.tls || l.tls->client_ca_file.empty())) {
      log::warn("server", "listener ", l.host, ":", l.port,
                " is not on loopback and has no client authentication (server.client_auth or "
                "tls.client_ca_file): anyone who reaches it can pull through the configured "
                "upstreams' credentials");
    }
  }
  if (!cfg.server.client_token_file.empty()) {
    registry::warn_if_exposed(cfg.server.client_token_file, "client token file");
  }
}

void server::impl::open_cache() {
  const auto& c = cfg.cache;
  store = cache::open_rocksdb_store(cache::store_options{.path = c.path,
                                                         .capacity = c.capacity,
                                                         .block_cache = c.block_cache,
                                                         .sync_writes = c.sync_writes,
                                                         .memory_cache = c.memory_cache,
                                                         .min_free_disk = c.min_free_disk,
                                                         .max_disk = c.max_disk});
  blocking = std::make_unique<blocking_pool>(c.io_threads);
  blobs = std::make_unique<content::blob_source>(
      *store, *blocking,
      content::fill_settings{c.chunk_size, c.fetch_size, c.parallel_fetches, c.complete_partial});
  manifests = std::make_unique<content::manifest_cache>(*store, *blocking, c.tag_ttl, c.max_stale);
  if (cfg.prefetch.enabled) {
    prefetch = std::make_unique<prefetcher>(*store, *blobs, *blocking, cfg.prefetch);
    prefetch->load();
    store->set_hot([p = prefetch.get()](const oci::digest& d) { return p->hot_ranges(d); });
  }
  log::info("server", "cache at ", c.path, ": ", store->used_bytes(), " of ", c.capacity,
            " bytes used");
}

void server::impl::collect(metrics::snapshot& s) const {
  s.open_connections = open.load();
  if (store) {
    const auto st = store->stats();
    s.has_store = true;
    s.used_bytes = st.used_bytes;
    s.capacity_bytes = st.capacity;
    s.blobs = st.blobs;
    s.chunks = st.chunks;
    s.evicted_blobs = st.evicted_blobs;
    s.evicted_bytes = st.evicted_bytes;
    s.corrupt_chunks = st.corrupt_chunks;
    s.memory_bytes = st.memory_bytes;
    s.memory_hits = st.memory_hits;
    s.memory_shared = st.memory_shared;
    s.memory_misses = st.memory_misses;
    s.block_cache_bytes = st.block_cache_bytes;
    s.write_buffer_bytes = st.write_buffer_bytes;
    s.disk_full = st.disk_full;
    s.disk_refusals = st.disk_refusals;
    s.disk_bytes = st.disk_bytes;
    s.disk_free_bytes = st.disk_free_bytes;
    s.disk_max_bytes = st.max_disk;
    s.disk_compactions = st.disk_compactions;
  }
  if (blobs) {
    const auto b = blobs->stats();
    s.chunks_from_store = b.chunks_from_store;
    s.chunks_joined = b.chunks_joined;
    s.chunks_filled = b.chunks_filled;
    s.fills_started = b.fills_started;
    s.fills_in_flight = b.chunks_in_flight;
    s.blobs_verified = b.verified;
    s.store_errors = b.store_errors;
    s.blob_digest_failures = b.digest_failures;
    s.hashed_bytes = b.hashed_bytes;
    s.background_yields = b.background_yields;
    s.demand_takeovers = b.demand_takeovers;
    s.unproven_reads = b.unproven_reads;
    s.prefetch_fetched_bytes = b.prefetch_fetched_bytes;
    s.prefetch_used_bytes = b.prefetch_used_bytes;
  }
  if (prefetch) {
    const auto p = prefetch->stats();
    s.has_prefetch = true;
    s.prefetch_queue_depth = p.queued;
    s.prefetch_profile_replays = p.profile_replays;
    s.prefetch_eager_replays = p.eager_replays;
    s.prefetch_runs_recorded = p.runs_recorded;
    s.prefetch_jobs_failed = p.jobs_failed;
    s.profiles = p.profiles;
    s.prefetch_published = p.published;
    s.prefetch_publish_failures = p.publish_failures;
    s.prefetch_found_published = p.found_published;
  }
}

server::~server() {
  try {
    stop();
  } catch (const std::exception& e) {  // a destructor must not throw: said, and gone
    log::error("server", "stopping: ", e.what());
  }
}

namespace {

// Client connections, each with upstream connections of its own (a fill and a few ahead),
// admin connections, and the store's files and pipes: what RLIMIT_NOFILE must allow.
std::uint64_t descriptors_needed(const config::config& cfg) {
  constexpr std::uint64_t reserve = 1024;  // RocksDB files, upstream pools, helpers, logs
  const std::uint64_t admin = cfg.admin.enabled ? cfg.admin.max_connections : 0;
  return cfg.server.max_connections * 2 + admin + reserve;
}

// Raises the soft RLIMIT_NOFILE toward the hard limit so that max_connections fit; warns when
// they still do not (accept would fail with EMFILE before the connection cap is reached).
void fit_descriptor_limit(const config::config& cfg) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  const std::uint64_t needed = descriptors_needed(cfg);
  auto plan = net::plan_nofile(lim.rlim_cur, lim.rlim_max, needed);
  if (plan.soft > lim.rlim_cur) {
    rlimit raised = lim;
    raised.rlim_cur = static_cast<rlim_t>(plan.soft);
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      log::info("server", "descriptor limit raised from ", lim.rlim_cur, " to ", plan.soft);
    } else {
      log::warn("server",
                "cannot raise the descriptor limit: ", std::system_category().message(errno));
      plan.soft = lim.rlim_cur;
    }
  }
  if (plan.short_of_needed || plan.soft < needed) {
    log::warn("server", "the descriptor limit (", plan.soft, ", hard ", lim.rlim_max,
              ") is below the ", needed, " that server.max_connections ",
              cfg.server.max_connections,
              " may need: raise LimitNOFILE / ulimit -n, or lower max_connections");
  }
}

}  // namespace

void server::start() {
  auto& m = *impl_;
  if (m.started) throw std::logic_error("server already started");
  m.started = true;
  fit_descriptor_limit(m.cfg);
  unsigned threads = m.cfg.server.threads;
  if (threads == 0) {
    threads = default_worker_count();
    log::info("server", threads, " worker threads (one per CPU this process may use)");
  }
  m.make_workers(threads);
  for (std::size_t li = 0; li < m.cfg.server.listen.size(); ++li) m.bind_listener(li);
  if (m.cfg.admin.enabled) m.open_admin();
  m.run_workers();
  m.ready = true;
  if (m.prefetch) m.start_prefetch_tasks();
}

void server::impl::make_services() {
  access_observer* observer = &no_observer;
  if (prefetch) observer = prefetch.get();
  blob_answers = blobs ? cached_blobs(*blobs, *observer, metrics) : relayed_blobs(metrics);
  manifest_answers = manifests
                         ? cached_manifests(*manifests, cfg, *observer, *blob_answers, metrics)
                         : relayed_manifests(cfg, *observer, *blob_answers, metrics);
  shared.emplace(
      services{cfg, metrics, access_log, *observer, *manifest_answers, *blob_answers, via});
}

preload_services server::impl::preloads_on(worker& w) {
  return preload_services{cfg, metrics, w.context.clients, *blobs, *manifests, prefetch.get()};
}

std::unique_ptr<registry::upstream_client> server::impl::origin_client(worker& w,
                                                                       const config::upstream& u) {
  auto client = std::make_unique<registry::upstream_client>(
      u, w.pool, upstream_tls[u.name].get(), tokens, *credentials[u.name], *redirects[u.name]);
  client->set_metrics(&metrics.upstream(u.name));
  client->set_own_endpoints(&own);
  return client;
}

std::unique_ptr<registry::mirror_clients> server::impl::mirror_clients_on(worker& w,
                                                                          const config::upstream& u,
                                                                          mirror_parts& parts) {
  std::vector<std::unique_ptr<registry::upstream_client>> clients;
  for (std::size_t k = 0; k < parts.state->size(); ++k) {
    clients.push_back(std::make_unique<registry::upstream_client>(
        parts.state->endpoint(k), w.pool, parts.tls[k].get(), tokens, *parts.credentials[k],
        *parts.redirects[k]));
    clients.back()->set_own_endpoints(&own);
  }
  return std::make_unique<registry::mirror_clients>(*parts.state, std::move(clients),
                                                    origin_client(w, u));
}

void server::impl::make_workers(unsigned threads) {
  make_services();
  for (unsigned i = 0; i < threads; ++i) {
    auto w = std::make_unique<worker>(*shared, open);
    for (const auto& u : cfg.upstreams) {
      auto client = origin_client(*w, u);
      if (auto it = mirrors.find(u.name); it != mirrors.end()) {
        w->mirrors.push_back(mirror_clients_on(*w, u, it->second));
        client->set_mirrors(w->mirrors.back().get());
      }
      if (auto it = access.find(u.name); it != access.end()) {
        w->context.gates.emplace(
            u.name, std::make_unique<access_gate>(
                        u, *it->second, *client,
                        access_gate::client_parts{w->pool, upstream_tls[u.name].get(), &own,
                                                  &metrics.upstream(u.name)}));
      }
      w->context.clients.emplace(u.name, std::move(client));
    }
    workers.push_back(std::move(w));
  }
}

void server::impl::bind_listener(std::size_t li) {
  const auto& l = cfg.server.listen[li];
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(l.host, ec);
  if (ec) throw std::runtime_error("bad listen address " + l.host);
  std::uint16_t port = l.port;
  for (auto& w : workers) {
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
    w->acceptors.emplace_back(std::move(a), listener_tls[li].get());
  }
  own.add(asio::ip::tcp::endpoint(address, port));
  bound_ports.push_back(port);
  log::info("server", "listening on ", host_text(l.host), ":", port, l.tls ? " (TLS)" : "");
}

void server::impl::open_admin() {
  auto& w0 = *workers.front();
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(cfg.admin.host, ec);
  if (ec) throw std::runtime_error("bad admin address " + cfg.admin.host);
  asio::ip::tcp::acceptor a(w0.io);
  const asio::ip::tcp::endpoint ep(address, cfg.admin.port);
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("cannot listen on admin address " + cfg.admin.host + ":" +
                             std::to_string(cfg.admin.port) + ": " + ec.message());
  }
  admin_port = a.local_endpoint().port();
  own.add(asio::ip::tcp::endpoint(address, admin_port));
  admin_acceptor.emplace(std::move(a));
  admin = std::make_unique<admin_context>(admin_context{cfg, metrics, w0.context, store.get(),
                                                        blocking.get(), blobs.get(), prefetch.get(),
                                                        std::nullopt, ready, admin_port});
  if (blobs) admin->preloads.emplace(preloads_on(w0));
  asio::co_spawn(w0.io, admin_loop(*admin_acceptor), asio::detached);
  log::info("server", "metrics and admin API on http://", host_text(cfg.admin.host), ":",
            admin_port);
}

void server::impl::run_workers() {
  running = static_cast<unsigned>(workers.size());
  for (auto& wp : workers) {
    auto* w = wp.get();
    for (auto& [a, tls] : w->acceptors) {
      asio::co_spawn(w->io, accept_loop(*w, a, tls), asio::detached);
    }
    w->thread = std::thread([this, w] {
      for (;;) {
        try {
          w->io.run();
          break;
        } catch (const std::exception& e) {
          // A bug escaped a session; keep serving the others.
          log::error("server", "worker: unexpected exception: ", e.what());
        }
      }
      std::lock_guard lock(mutex);
      --running;
      stopped_cv.notify_all();
    });
  }
}

void server::impl::start_prefetch_tasks() {
  auto& w0 = *workers.front();
  save_timer.emplace(w0.io);
  asio::co_spawn(w0.io, save_loop(), asio::detached);
  if (!cfg.prefetch.preload.empty()) {
    asio::co_spawn(w0.io, preload_list(w0), asio::detached);
  }
}

std::vector<std::uint16_t> server::ports() const { return impl_->bound_ports; }

std::uint64_t server::open_connections() const { return impl_->open.load(); }

std::uint16_t server::admin_port() const { return impl_->admin_port; }

std::string server::metrics_text() { return impl_->metrics.serialize(); }

void server::reload_failed() { impl_->metrics.config_reload(false); }

std::vector<std::string> server::reload(const config::config& next) {
  auto& m = *impl_;
  std::lock_guard lock(m.reload_mutex);
  std::vector<std::string> applied;
  auto& cur = m.applied;
  if (cur.log.level != next.log.level) {
    log::set_level(to_log_level(next.log.level));
    applied.push_back("log.level: " + std::string(level_name(cur.log.level)) + " -> " +
                      std::string(level_name(next.log.level)));
  }
  if (cur.log.access != next.log.access) {
    m.access_log = next.log.access;
    applied.push_back(std::string("log.access: ") + (next.log.access ? "true" : "false"));
  }
  if (m.manifests &&
      (cur.cache.tag_ttl != next.cache.tag_ttl || cur.cache.max_stale != next.cache.max_stale)) {
    m.manifests->set_ttls(next.cache.tag_ttl, next.cache.max_stale);
    applied.push_back("cache.tag_ttl: " + seconds_text(next.cache.tag_ttl) +
                      ", cache.max_stale: " + seconds_text(next.cache.max_stale));
  }
  if (m.store && cur.cache.capacity != next.cache.capacity) {
    m.store->set_capacity(next.cache.capacity);
    applied.push_back("cache.capacity: " + std::to_string(cur.cache.capacity) + " -> " +
                      std::to_string(next.cache.capacity) + " bytes");
  }
  for (const auto& key : restart_only_changes(cur, next)) {
    log::warn("server", "reload: ", key, " changed; it takes effect at the next restart");
  }
  // What was applied is now current; what needs a restart stays as it runs.
  cur.log = next.log;
  cur.cache.tag_ttl = next.cache.tag_ttl;
  cur.cache.max_stale = next.cache.max_stale;
  cur.cache.capacity = next.cache.capacity;
  for (const auto& a : applied) log::info("server", "reload: ", a);
  if (applied.empty()) log::info("server", "reload: nothing to apply");
  m.metrics.config_reload(true);
  return applied;
}

void server::stop() {
  auto& m = *impl_;
  {
    std::lock_guard lock(m.mutex);
    if (!m.started || m.stopped) return;
    m.stopped = true;
  }
  if (m.prefetch) m.prefetch->stop();
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
  if (m.prefetch) {
    m.save_timer.reset();
    const auto saved = m.prefetch->save_closed_now(true);
    if (saved > 0) log::info("prefetch", "saved ", saved, " profiles at shutdown");
  }
  log::info("server", "stopped");
}

}  // namespace layercache::server
