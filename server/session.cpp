#include "server/session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <vector>

#include "content/blob_source.hpp"
#include "content/manifest_cache.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "oci/digest.hpp"
#include "oci/manifest.hpp"
#include "oci/media_types.hpp"
#include "oci/range.hpp"
#include "registry/auth.hpp"
#include "registry/distribution.hpp"
#include "server/blob_answer.hpp"
#include "server/client_auth.hpp"
#include "server/prefetch.hpp"
#include "server/route.hpp"
#include "server/upstream_select.hpp"

namespace layercache::server {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t relay_buffer_size = std::size_t{256} * 1024;
constexpr std::size_t max_error_body = std::size_t{64} * 1024;
constexpr std::string_view api_version = "registry/2.0";

using request = http::request<http::empty_body>;

bool is_success(unsigned status) { return status >= 200 && status < 300; }

using clock = std::chrono::steady_clock;

metrics::route metrics_route(route_kind k) {
  switch (k) {
    case route_kind::base:
      return metrics::route::base;
    case route_kind::manifest:
      return metrics::route::manifest;
    case route_kind::blob:
      return metrics::route::blob;
    case route_kind::tags_list:
      return metrics::route::tags_list;
    case route_kind::referrers:
      return metrics::route::referrers;
  }
  return metrics::route::other;
}

double millis(clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// What one request/response exchange did: for metrics and the access log.
struct exchange {
  clock::time_point start = clock::now();
  std::optional<clock::time_point> header_at;  // response header written
  unsigned status = 0;                         // 0: no response header was written
  std::uint64_t bytes = 0;                     // body bytes written
  metrics::route kind = metrics::route::other;
  metrics::source from = metrics::source::local;
  std::string upstream;                      // configured name, when one was chosen
  std::optional<content::read_report> blob;  // where blob bytes came from
};

template <typename Stream>
class session final : public session_base {
 public:
  session(Stream& stream, worker_context& worker) : stream_(stream), worker_(worker) {
    worker_.sessions.insert(this);
  }
  ~session() override { worker_.sessions.erase(this); }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  void close_if_idle() override {
    if (idle_) close_now();
  }
  void close_now() override {
    boost::system::error_code ec;
    lowest().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    lowest().close();
  }

  asio::awaitable<void> run() {
    const auto& timeouts = worker_.cfg.server.timeouts;
    bool first = true;
    bool linger = false;  // the client may still be sending: see close()
    while (!worker_.draining) {
      http::request_parser<http::empty_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(worker_.cfg.server.max_header_size));
      lowest().expires_after(first ? timeouts.request_header : timeouts.idle);
      idle_ = !first;
      first = false;
      auto [ec, n] = co_await http::async_read_header(stream_, buffer_, parser, use_nothrow);
      idle_ = false;
      exchange_ = exchange{};
      current_ = {};
      if (ec) {
        const request none;
        if (ec == http::error::header_limit) {
          co_await send_error(none, 431, "UNSUPPORTED", "request header too large", false);
          finish_exchange(none);
          linger = true;
        } else if (ec.category() == make_error_code(http::error::end_of_stream).category() &&
                   ec != http::error::end_of_stream && ec != http::error::partial_message) {
          co_await send_error(none, 400, "UNSUPPORTED", "malformed request", false);
          finish_exchange(none);
        }
        break;
      }
      const request& req = parser.get();
      if (req.count(http::field::transfer_encoding) > 0 && !parser.chunked()) {
        // A coding we do not know (RFC 9112 6.1): where its body ends is unknown, so the bytes
        // after the header are never read as a request of their own.
        co_await send_error(req, 400, "UNSUPPORTED", "unsupported Transfer-Encoding", false);
        finish_exchange(req);
        break;
      }
      // A body we will not read leaves the connection unusable for the next request.
      const bool has_body = parser.chunked() || parser.content_length().value_or(0) > 0;
      const bool keep = co_await handle(req, req.keep_alive() && !has_body);
      finish_exchange(req);
      if (!keep || has_body) break;
    }
    co_await close(linger);
  }

 private:
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  // Counts the exchange in the metrics and writes its access-log line.
  void finish_exchange(const request& req) {
    const auto end = clock::now();
    const auto header_at = exchange_.header_at.value_or(end);
    if (worker_.metrics != nullptr) {
      metrics::request_sample sample;
      sample.kind = exchange_.kind;
      sample.from = exchange_.from;
      sample.status = exchange_.status;
      sample.duration = end - exchange_.start;
      sample.ttfb = header_at - exchange_.start;
      sample.body_bytes = exchange_.bytes;
      worker_.metrics->observe(sample);
      if (exchange_.blob) {
        worker_.metrics->served(metrics::source::hit, exchange_.blob->store_bytes);
        worker_.metrics->served(metrics::source::joined, exchange_.blob->joined_bytes);
        worker_.metrics->served(metrics::source::miss, exchange_.blob->filled_bytes);
        worker_.metrics->served(metrics::source::prefetch, exchange_.blob->prefetch_bytes);
      } else {
        worker_.metrics->served(exchange_.from, exchange_.bytes);
      }
    }
    if (worker_.access_log == nullptr || !worker_.access_log->load(std::memory_order_relaxed)) {
      return;
    }
    std::string line = "\"logger\":\"access\",\"method\":";
    line += log::json_string(req.method_string().empty() ? std::string_view("-")
                                                         : std::string_view(req.method_string()));
    line += ",\"target\":";
    line += log::json_string(req.target().empty() ? std::string_view("-")
                                                  : std::string_view(req.target()));
    line += ",\"route\":\"";
    line += metrics::to_string(exchange_.kind);
    line += "\",\"status\":" + std::to_string(exchange_.status);
    line += ",\"bytes\":" + std::to_string(exchange_.bytes);
    char timing[96];
    std::snprintf(timing, sizeof timing, ",\"duration_ms\":%.3f,\"ttfb_ms\":%.3f",
                  millis(end - exchange_.start), millis(header_at - exchange_.start));
    line += timing;
    line += ",\"source\":\"";
    line += metrics::to_string(exchange_.from);
    line += '"';
    if (!exchange_.upstream.empty())
      line += ",\"upstream\":" + log::json_string(exchange_.upstream);
    if (auto range = req[http::field::range]; !range.empty()) {
      line += ",\"range\":" + log::json_string(std::string_view(range.data(), range.size()));
    }
    line += ",\"client\":" + log::json_string(client_);
    log::json_line(line);
  }

  // `linger`: the answer went out before the request was read to its end. Closing a socket
  // with unread bytes makes the kernel send a reset, which can reach the client before it has
  // read the answer (it then sees ECONNRESET, not the 431). So the "lingering close": send FIN,
  // read and drop what still comes until the client closes, for at most 1 s and 1 MiB, then
  // close.
  asio::awaitable<void> close(bool linger = false) {
    boost::system::error_code ec;
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
      lowest().expires_after(std::chrono::seconds(5));
      co_await stream_.async_shutdown(use_nothrow);
    }
    lowest().socket().shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    if (linger) {
      constexpr std::size_t linger_bytes = std::size_t{1024} * 1024;
      lowest().expires_after(std::chrono::seconds(1));
      buffer_.clear();
      const auto sink =
          buffer_.prepare(std::size_t{16} * 1024);  // never committed: what is read is dropped
      for (std::size_t dropped = 0; dropped < linger_bytes;) {
        auto [read_ec, n] = co_await lowest().async_read_some(sink, use_nothrow);
        if (read_ec) break;
        dropped += n;
      }
    }
    lowest().close();
  }

  // Writes a complete response. For HEAD, the header says the length and no body follows.
  // `head_length` is the Content-Length a HEAD answer announces when it differs from the body.
  asio::awaitable<bool> send(const request& req, http::response<http::string_body> res,
                             bool keep_alive, std::optional<std::uint64_t> head_length = {}) {
    res.version(11);
    res.set("Docker-Distribution-API-Version", api_version);
    res.keep_alive(keep_alive && !worker_.draining);
    res.prepare_payload();
    if (req.method() == http::verb::head) {
      res.body().clear();
      if (head_length) res.set(http::field::content_length, std::to_string(*head_length));
    }
    lowest().expires_after(worker_.cfg.server.timeouts.write);
    exchange_.status = res.result_int();
    auto [ec, n] = co_await http::async_write(stream_, res, use_nothrow);
    if (!ec) {
      exchange_.header_at = clock::now();
      exchange_.bytes += res.body().size();
    }
    co_return !ec && res.keep_alive();
  }

  asio::awaitable<bool> send_error(const request& req, unsigned status, std::string_view code,
                                   std::string_view message, bool keep_alive) {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::content_type, "application/json");
    res.body() = oci_error_body(code, message);
    if (status == 405) res.set(http::field::allow, "GET, HEAD");
    co_return co_await send(req, std::move(res), keep_alive);
  }

  asio::awaitable<bool> send_failure(const request& req, const registry::upstream_client& client,
                                     const registry::upstream_failure& f, bool keep_alive) {
    log::warn("proxy", "upstream ", client.settings().name, ": ", f.message);
    const std::string message = "upstream " + client.settings().name + ": " + f.message;
    co_return co_await send_error(req, f.http_status(), f.oci_code(), message, keep_alive);
  }

  // Passes an upstream error response on: its status, its (small) OCI error body, and the
  // headers a client can act on. Never WWW-Authenticate: the client cannot log in to the
  // upstream through us.
  asio::awaitable<bool> forward_error(const request& req, registry::upstream_response& up,
                                      bool keep_alive) {
    http::response<http::string_body> res{static_cast<http::status>(up.status()), 11};
    if (auto ct = up.fields()[http::field::content_type]; !ct.empty()) {
      res.set(http::field::content_type, ct);
    }
    if (auto ra = up.fields()[http::field::retry_after]; !ra.empty()) {
      res.set(http::field::retry_after, ra);
    }
    if (auto cr = up.fields()[http::field::content_range]; !cr.empty() && up.status() == 416) {
      res.set(http::field::content_range, cr);
    }
    if (req.method() != http::verb::head) {
      auto [ec, body] = co_await up.read_all(max_error_body);
      if (ec) {
        res.set(http::field::content_type, "application/json");
        body = oci_error_body("UNKNOWN", "upstream answered " + std::to_string(up.status()));
      }
      res.body() = std::move(body);
    }
    co_return co_await send(req, std::move(res), keep_alive);
  }

  asio::awaitable<bool> handle(const request& req, bool keep_alive) {
    if (const auto& token = worker_.cfg.server.client_token; !token.empty()) {
      bool ok = false;
      for (auto [it, end] = req.equal_range(http::field::authorization); it != end && !ok; ++it) {
        ok = client_credentials_ok(it->value(), token);
      }
      if (!ok) {
        http::response<http::string_body> res{http::status::unauthorized, 11};
        res.set(http::field::content_type, "application/json");
        res.set(http::field::www_authenticate, "Basic realm=\"layercache\"");
        res.body() = oci_error_body("UNAUTHORIZED", "this mirror needs client credentials");
        co_return co_await send(req, std::move(res), keep_alive);
      }
    }
    auto parsed = parse_route(req.target());
    if (auto* e = std::get_if<route_error>(&parsed)) {
      co_return co_await send_error(req, e->status, e->code, e->message, keep_alive);
    }
    const route& r = std::get<route>(parsed);
    exchange_.kind = metrics_route(r.kind);
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      co_return co_await send_error(req, 405, "UNSUPPORTED", "this registry mirror is read-only",
                                    keep_alive);
    }
    if (r.kind == route_kind::base) {
      http::response<http::string_body> res{http::status::ok, 11};
      res.set(http::field::content_type, "application/json");
      res.body() = "{}";
      co_return co_await send(req, std::move(res), keep_alive);
    }
    auto chosen = select_upstream(worker_.cfg, r.name, r.ns);
    if (auto* e = std::get_if<route_error>(&chosen)) {
      co_return co_await send_error(req, e->status, e->code, e->message, keep_alive);
    }
    const auto& choice = std::get<upstream_choice>(chosen);
    exchange_.upstream = choice.upstream->name;
    auto it = worker_.clients.find(choice.upstream->name);
    registry::upstream_client& client = *it->second;
    current_ = current_request{&client, &choice.repository, &r.reference};
    switch (r.kind) {
      case route_kind::manifest:
        co_return co_await manifest(req, r, choice, client, keep_alive);
      case route_kind::blob:
        co_return co_await blob(req, r, choice, client, keep_alive);
      default:
        co_return co_await listing(req, r, choice, client, keep_alive);
    }
  }

  // Manifests. Without the cache they come from the upstream every time; with it, see
  // cached_manifest.
  asio::awaitable<bool> manifest(const request& req, const route& r, const upstream_choice& choice,
                                 registry::upstream_client& client, bool keep_alive) {
    // Clients (Go's net/http in skopeo, containerd) send one Accept header per media type:
    // all of them count.
    std::string accept;
    for (auto [it, end] = req.equal_range(http::field::accept); it != end; ++it) {
      if (!accept.empty()) accept += ", ";
      accept += it->value();
    }
    if (accept.empty()) accept = oci::default_manifest_accept();
    if (worker_.manifests == nullptr) {
      exchange_.from = metrics::source::upstream;
      co_return co_await manifest_from_upstream(req, r, choice, client, accept, nullptr,
                                                keep_alive);
    }
    co_return co_await cached_manifest(req, r, choice, client, accept, keep_alive);
  }

  // What manifest_from_upstream needs to know when the cache is on.
  struct manifest_cache_state {
    std::string key;                           // tag record to write; empty for a digest
    std::string accept_cls;                    // accept_class() of the request
    std::optional<content::cached_tag> stale;  // served, flagged, when the upstream fails
  };

  // By digest: from the store, else from upstream and stored. By tag: a record confirmed within
  // cache.tag_ttl is served from the store; an older one is revalidated with an upstream HEAD
  // (same digest: confirmed and served from the store); when the upstream fails, a record
  // confirmed within cache.max_stale is served with X-Layercache-Stale.
  asio::awaitable<bool> cached_manifest(const request& req, const route& r,
                                        const upstream_choice& choice,
                                        registry::upstream_client& client,
                                        const std::string& accept, bool keep_alive) {
    auto& cache = *worker_.manifests;
    exchange_.from = metrics::source::miss;
    manifest_cache_state state;
    if (const auto requested = oci::digest::parse(r.reference)) {
      if (auto stored = co_await cache.manifest(*requested)) {
        co_return co_await send_stored(req, *requested, *stored, false, keep_alive);
      }
      co_return co_await manifest_from_upstream(req, r, choice, client, accept, &state, keep_alive);
    }
    state.accept_cls = content::accept_class(accept);
    state.key =
        content::tag_key(client.settings().name, choice.repository, r.reference, state.accept_cls);
    auto found = co_await cache.lookup_tag(client.settings().name, choice.repository, r.reference,
                                           state.accept_cls);
    auto hit = std::move(found.own);
    auto& native = found.native;  // resolved natively, or an imported profile's hint
    if (!hit && native && cache.fresh(native->fetched_at)) std::swap(hit, native);
    if (!hit || !cache.fresh(hit->fetched_at)) {
      client.warm();  // for the blob reads that follow
      // What the tag last named: a profile of it replays now, beside the resolution (wasted
      // only if the tag has moved since).
      if (const auto* last = hit ? &*hit : native ? &*native : nullptr) {
        note_manifest(last->digest, last->manifest.media_type, last->manifest.bytes, true);
      }
    }
    if (!hit) {
      co_return co_await manifest_from_upstream(req, r, choice, client, accept, &state, keep_alive);
    }
    if (cache.fresh(hit->fetched_at)) {
      co_return co_await send_stored(req, hit->digest, hit->manifest, false, keep_alive);
    }
    const bool stale_ok = cache.may_serve_stale(hit->fetched_at);

    // Revalidate: what does the tag name upstream now?
    auto result = co_await registry::head_manifest(client, choice.repository, r.reference, accept);
    if (auto* f = std::get_if<registry::upstream_failure>(&result)) {
      if (stale_ok) co_return co_await send_stale(req, r, client, *hit, f->message, keep_alive);
      co_return co_await send_failure(req, client, *f, keep_alive);
    }
    auto up = std::move(std::get<std::unique_ptr<registry::upstream_response>>(result));
    const unsigned status = up->status();
    if (is_success(status)) {
      if (const auto current = oci::digest::parse(up->fields()["Docker-Content-Digest"])) {
        if (*current == hit->digest) {
          co_await cache.confirm(state.key, *current);
          co_return co_await send_stored(req, hit->digest, hit->manifest, false, keep_alive);
        }
        // Re-tagged to a manifest that may be stored already (e.g. pulled by digest).
        auto other = co_await cache.manifest(*current);
        if (other && content::accepts(state.accept_cls, other->media_type)) {
          co_await cache.confirm(state.key, *current);
          co_return co_await send_stored(req, *current, *other, false, keep_alive);
        }
      }
      if (req.method() == http::verb::head) {
        co_return co_await answer_head(req, *up, std::nullopt, keep_alive);
      }
    } else {
      if ((status >= 500 || status == 429) && stale_ok) {
        const std::string reason = "answered " + std::to_string(status);
        co_return co_await send_stale(req, r, client, *hit, reason, keep_alive);
      }
      if (req.method() == http::verb::head) co_return co_await forward_error(req, *up, keep_alive);
    }
    up.reset();  // its connection goes back to the pool for the GET
    if (stale_ok) state.stale = std::move(hit);
    co_return co_await manifest_from_upstream(req, r, choice, client, accept, &state, keep_alive);
  }

  // A stored manifest, with the headers a registry sends; HEAD: no body.
  asio::awaitable<bool> send_stored(const request& req, const oci::digest& digest,
                                    const cache::stored_manifest& m, bool stale, bool keep_alive) {
    exchange_.from = metrics::source::hit;
    http::response<http::string_body> res{http::status::ok, 11};
    if (m.media_type.empty()) {
      res.set(http::field::content_type, oci::media_types::oci_manifest);
    } else {
      res.set(http::field::content_type, m.media_type);
    }
    res.set("Docker-Content-Digest", digest.str());
    res.set(http::field::etag, "\"" + digest.str() + "\"");
    if (stale) res.set("X-Layercache-Stale", "true");
    note_manifest(digest, m.media_type, m.bytes, req.method() == http::verb::head);
    res.body() = m.bytes;
    const std::uint64_t length = m.bytes.size();
    co_return co_await send(req, std::move(res), keep_alive, length);
  }

  asio::awaitable<bool> send_stale(const request& req, const route& r,
                                   const registry::upstream_client& client,
                                   const content::cached_tag& hit, const std::string& reason,
                                   bool keep_alive) {
    log::warn("proxy", "upstream ", client.settings().name, " failed for tag ", r.reference, " (",
              reason, "): serving stale ", hit.digest.str(), ", confirmed ",
              content::manifest_cache::age(hit.fetched_at), "s ago");
    if (worker_.metrics != nullptr) worker_.metrics->stale_serve();
    co_return co_await send_stored(req, hit.digest, hit.manifest, true, keep_alive);
  }

  // Answers a HEAD from the upstream's HEAD answer: no body to hash, so say what the upstream
  // says, and what the reference proves.
  asio::awaitable<bool> answer_head(const request& req, registry::upstream_response& up,
                                    const std::optional<oci::digest>& requested, bool keep_alive) {
    http::response<http::string_body> res{http::status::ok, 11};
    const std::string content_type(up.fields()[http::field::content_type]);
    std::string digest(up.fields()["Docker-Content-Digest"]);
    if (requested) digest = requested->str();
    if (!content_type.empty()) res.set(http::field::content_type, content_type);
    if (!digest.empty()) {
      res.set("Docker-Content-Digest", digest);
      res.set(http::field::etag, "\"" + digest + "\"");
    }
    co_return co_await send(req, std::move(res), keep_alive, up.content_length());
  }

  // The manifest from the upstream, as a GET or HEAD like the client's. With `cached`: a 200
  // GET is stored (and the tag record written), a HEAD naming a stored manifest writes the tag
  // record, and an upstream failure serves `cached->stale` if there is one.
  asio::awaitable<bool> manifest_from_upstream(const request& req, const route& r,
                                               const upstream_choice& choice,
                                               registry::upstream_client& client,
                                               const std::string& accept,
                                               manifest_cache_state* cached, bool keep_alive) {
    exchange_.from = cached != nullptr ? metrics::source::miss : metrics::source::upstream;
    if (req.method() == http::verb::head) {
      co_return co_await manifest_head_from_upstream(req, r, choice, client, accept, cached,
                                                     keep_alive);
    }
    const bool can_be_stale = cached != nullptr && cached->stale.has_value();
    auto result = co_await registry::get_manifest(client, choice.repository, r.reference, accept,
                                                  worker_.cfg.server.max_manifest_size);
    if (auto* f = std::get_if<registry::manifest_failure>(&result)) {
      using why = registry::manifest_failure::why;
      if (f->kind == why::digest_mismatch) {
        log::error("proxy", "upstream ", client.settings().name, ": ", f->failure.message);
        if (worker_.metrics != nullptr) worker_.metrics->digest_failure("manifest");
        co_return co_await send_error(req, 502, "MANIFEST_INVALID",
                                      "upstream manifest does not match its digest", keep_alive);
      }
      if (f->kind == why::body_too_large) {
        co_return co_await send_error(req, 502, "MANIFEST_INVALID", f->failure.message, keep_alive);
      }
      if (can_be_stale) {
        co_return co_await send_stale(req, r, client, *cached->stale, f->failure.message,
                                      keep_alive);
      }
      co_return co_await send_failure(req, client, f->failure, keep_alive);
    }
    if (auto* up = std::get_if<std::unique_ptr<registry::upstream_response>>(&result)) {
      const unsigned status = (*up)->status();
      if (can_be_stale && (status >= 500 || status == 429)) {
        const std::string reason = "answered " + std::to_string(status);
        co_return co_await send_stale(req, r, client, *cached->stale, reason, keep_alive);
      }
      co_return co_await forward_error(req, **up, keep_alive);
    }
    auto& m = std::get<registry::manifest_body>(result);
    if (cached != nullptr && m.status == 200) {
      co_await worker_.manifests->put(m.digest, m.media_type, m.bytes, cached->key);
    }
    if (m.status == 200) note_manifest(m.digest, m.media_type, m.bytes);
    http::response<http::string_body> res{http::status::ok, 11};
    res.set(http::field::content_type, m.media_type);
    res.set("Docker-Content-Digest", m.digest.str());
    res.set(http::field::etag, "\"" + m.digest.str() + "\"");
    res.body() = std::move(m.bytes);
    co_return co_await send(req, std::move(res), keep_alive);
  }

  // manifest_from_upstream for a HEAD: a tag resolved to a manifest already stored writes
  // the tag record (containerd resolves tags with HEAD, then GETs by digest).
  asio::awaitable<bool> manifest_head_from_upstream(const request& req, const route& r,
                                                    const upstream_choice& choice,
                                                    registry::upstream_client& client,
                                                    const std::string& accept,
                                                    manifest_cache_state* cached, bool keep_alive) {
    const bool can_be_stale = cached != nullptr && cached->stale.has_value();
    auto result = co_await registry::head_manifest(client, choice.repository, r.reference, accept);
    if (auto* f = std::get_if<registry::upstream_failure>(&result)) {
      if (can_be_stale) {
        co_return co_await send_stale(req, r, client, *cached->stale, f->message, keep_alive);
      }
      co_return co_await send_failure(req, client, *f, keep_alive);
    }
    auto& up = *std::get<std::unique_ptr<registry::upstream_response>>(result);
    const unsigned status = up.status();
    if (can_be_stale && (status >= 500 || status == 429)) {
      const std::string reason = "answered " + std::to_string(status);
      co_return co_await send_stale(req, r, client, *cached->stale, reason, keep_alive);
    }
    if (!is_success(status)) co_return co_await forward_error(req, up, keep_alive);
    if (cached != nullptr && !cached->key.empty()) {
      if (const auto d = oci::digest::parse(up.fields()["Docker-Content-Digest"])) {
        auto m = co_await worker_.manifests->manifest(*d);
        if (m && content::accepts(cached->accept_cls, m->media_type)) {
          co_await worker_.manifests->confirm(cached->key, *d);
          note_manifest(*d, m->media_type, m->bytes, true);
        } else if (!m) {
          worker_.manifests->expect(cached->key, cached->accept_cls, *d);
          note_tag(*d);
        }
      }
    }
    const auto requested = oci::digest::parse(r.reference);
    co_return co_await answer_head(req, up, requested, keep_alive);
  }

  // Answers a HEAD with `res`'s status and fields, announcing `length` when known.
  asio::awaitable<bool> send_head(const request& /*req*/,
                                  const http::response<http::buffer_body>& res,
                                  std::optional<std::uint64_t> length) {
    http::response<http::empty_body> head{http::response_header<>(res.base())};
    if (length) head.set(http::field::content_length, std::to_string(*length));
    head.keep_alive(res.keep_alive());
    lowest().expires_after(worker_.cfg.server.timeouts.write);
    http::response_serializer<http::empty_body> sr{head};
    exchange_.status = head.result_int();
    auto [ec, n] = co_await http::async_write_header(stream_, sr, use_nothrow);
    if (!ec) exchange_.header_at = clock::now();
    co_return !ec && head.keep_alive();
  }

  // Writes the header of a streamed body; the pieces follow with write_piece.
  asio::awaitable<bool> start_body(http::response<http::buffer_body>& res,
                                   http::response_serializer<http::buffer_body>& sr) {
    res.body().data = nullptr;
    res.body().more = true;
    lowest().expires_after(worker_.cfg.server.timeouts.write);
    exchange_.status = res.result_int();
    auto [ec, n] = co_await http::async_write_header(stream_, sr, use_nothrow);
    if (!ec) exchange_.header_at = clock::now();
    co_return !ec;
  }

  // Writes one piece of a streamed body; the header too, in the same write, when start_body
  // has not sent it (one send per small response instead of two).
  asio::awaitable<bool> write_piece(http::response<http::buffer_body>& res,
                                    http::response_serializer<http::buffer_body>& sr,
                                    const char* data, std::size_t size) {
    res.body().data = const_cast<char*>(data);
    res.body().size = size;
    res.body().more = true;
    const bool with_header = !sr.is_header_done();
    if (with_header) exchange_.status = res.result_int();
    lowest().expires_after(worker_.cfg.server.timeouts.write);
    auto [ec, n] = co_await http::async_write(stream_, sr, use_nothrow);
    const bool ok = !ec || ec == http::error::need_buffer;
    if (ok) exchange_.bytes += size;
    if (ok && with_header) exchange_.header_at = clock::now();
    co_return ok;
  }

  asio::awaitable<bool> finish_body(http::response<http::buffer_body>& res,
                                    http::response_serializer<http::buffer_body>& sr) {
    res.body().data = nullptr;
    res.body().size = 0;
    res.body().more = false;
    lowest().expires_after(worker_.cfg.server.timeouts.write);
    auto [ec, n] = co_await http::async_write(stream_, sr, use_nothrow);
    co_return !ec;
  }

  // Blobs through the chunk cache: size from the store or an upstream HEAD, bytes from
  // stored chunks or shared fills, ranges answered exactly (single, open, suffix, multi).
  asio::awaitable<bool> cached_blob(const request& req, const route& r,
                                    const upstream_choice& choice,
                                    registry::upstream_client& client, bool keep_alive) {
    const auto digest = *oci::digest::parse(r.reference);
    exchange_.from = metrics::source::miss;
    auto described = co_await worker_.blobs->describe(client, choice.repository, digest);
    if (auto* f = std::get_if<registry::upstream_failure>(&described)) {
      co_return co_await send_failure(req, client, *f, keep_alive);
    }
    if (auto* up = std::get_if<std::unique_ptr<registry::upstream_response>>(&described)) {
      // The upstream refused a HEAD, which has no body to pass on: say it in an OCI body.
      const unsigned status = (*up)->status();
      http::response<http::string_body> res{static_cast<http::status>(status), 11};
      res.set(http::field::content_type, "application/json");
      if (auto ra = (*up)->fields()[http::field::retry_after]; !ra.empty()) {
        res.set(http::field::retry_after, ra);
      }
      res.body() = oci_error_body(blob_refusal_code(status),
                                  "upstream " + client.settings().name + " answered " +
                                      std::to_string(status) + " for this blob");
      co_return co_await send(req, std::move(res), keep_alive);
    }
    const auto meta = std::get<content::described_blob>(described);
    exchange_.from = meta.in_store ? metrics::source::hit : metrics::source::miss;
    const auto answer = plan_blob_answer(req.method() == http::verb::head, req[http::field::range],
                                         req[http::field::if_range], digest, meta.size);
    if (answer.status == 416) {
      http::response<http::string_body> res{http::status::range_not_satisfiable, 11};
      res.set(http::field::content_range, answer.content_range);
      res.set(http::field::content_type, answer.content_type);
      res.body() = oci_error_body("UNSUPPORTED", "requested range not satisfiable");
      co_return co_await send(req, std::move(res), keep_alive);
    }
    http::response<http::buffer_body> res{static_cast<http::status>(answer.status), 11};
    res.set("Docker-Distribution-API-Version", api_version);
    res.set(http::field::accept_ranges, "bytes");
    res.set(http::field::etag, "\"" + digest.str() + "\"");
    res.set("Docker-Content-Digest", digest.str());
    res.set(http::field::content_type, answer.content_type);
    if (!answer.content_range.empty()) res.set(http::field::content_range, answer.content_range);
    res.keep_alive(keep_alive && !worker_.draining);
    if (req.method() == http::verb::head) co_return co_await send_head(req, res, answer.length);
    res.content_length(answer.length);
    co_return co_await stream_blob(req, choice, client, digest, meta, answer, res, keep_alive);
  }

  // Writes the body `answer` plans for `res` from the blob source. The header goes out with
  // the first body bytes: until then an upstream that fails (after its retries) gets the
  // client a 502 with an OCI error body instead of a cut connection.
  asio::awaitable<bool> stream_blob(const request& req, const upstream_choice& choice,
                                    registry::upstream_client& client, const oci::digest& digest,
                                    const content::described_blob& meta, const blob_answer& answer,
                                    http::response<http::buffer_body>& res, bool keep_alive) {
    auto& blobs = *worker_.blobs;
    http::response_serializer<http::buffer_body> sr{res};
    bool started = false;
    const content::blob_source::sink out = [&](const char* p,
                                               std::size_t n) -> asio::awaitable<bool> {
      started = true;
      co_return co_await write_piece(res, sr, p, n);
    };
    const auto unavailable = [&]() -> asio::awaitable<bool> {
      if (started) co_return false;
      exchange_.blob.reset();
      const std::string message =
          "upstream " + client.settings().name + ": the blob's bytes could not be fetched";
      co_return co_await send_error(req, 502, "UNAVAILABLE", message, keep_alive);
    };
    exchange_.blob.emplace();
    content::read_report& report = *exchange_.blob;
    if (answer.ranges.empty()) {
      // The whole blob: checked on the way, the last piece held back until it matches.
      if (worker_.prefetch != nullptr) worker_.prefetch->touched(digest, {0, meta.size});
      const auto result =
          co_await blobs.read_whole(client, choice.repository, digest, meta, out, &report);
      classify(report);
      if (result == content::blob_source::verified_read::mismatch) {
        if (worker_.metrics != nullptr) worker_.metrics->digest_failure("stream");
        log::error("proxy", "digest mismatch for ", digest.str(), " from upstream ",
                   client.settings().name, ": connection cut before the last byte, blob purged");
        co_return false;
      }
      if (result == content::blob_source::verified_read::failed) co_return co_await unavailable();
      if (!started && !co_await start_body(res, sr)) co_return false;
      const bool finished = co_await finish_body(res, sr);
      co_return finished&& res.keep_alive();
    }
    if (worker_.prefetch != nullptr) {
      for (const auto& br : answer.ranges)
        worker_.prefetch->touched(digest, oci::byte_interval(br));
    }
    for (const auto& br : answer.ranges) {
      if (answer.multipart()) {
        const std::string header = answer.part_header(br, meta.size);
        if (!co_await out(header.data(), header.size())) co_return false;
      }
      const bool ok = co_await blobs.read(client, choice.repository, digest, meta,
                                          oci::byte_interval(br), out, &report);
      classify(report);
      if (!ok) co_return co_await unavailable();
    }
    const std::string closing = answer.multipart() ? answer.closing() : std::string();
    if (!closing.empty() && !co_await out(closing.data(), closing.size())) co_return false;
    const bool finished = co_await finish_body(res, sr);
    co_await blobs.complete_later(client, choice.repository, digest, meta);
    co_return finished&& res.keep_alive();
  }

  // The request's source: the worst of what its bytes needed.
  void classify(const content::read_report& report) {
    if (report.filled_bytes > 0) {
      exchange_.from = metrics::source::miss;
    } else if (report.joined_bytes > 0) {
      exchange_.from = metrics::source::joined;
    } else if (report.prefetch_bytes > 0) {
      exchange_.from = metrics::source::prefetch;
    } else {
      exchange_.from = metrics::source::hit;
    }
  }

  asio::awaitable<bool> blob(const request& req, const route& r, const upstream_choice& choice,
                             registry::upstream_client& client, bool keep_alive) {
    if (worker_.blobs != nullptr) {
      co_return co_await cached_blob(req, r, choice, client, keep_alive);
    }
    const auto digest = *oci::digest::parse(r.reference);
    exchange_.from = metrics::source::upstream;
    auto result = co_await registry::relay_blob(
        client, choice.repository, digest, req.method() == http::verb::head,
        req[http::field::range], req[http::field::if_range]);
    if (auto* f = std::get_if<registry::upstream_failure>(&result)) {
      co_return co_await send_failure(req, client, *f, keep_alive);
    }
    auto& up = *std::get<std::unique_ptr<registry::upstream_response>>(result);
    const unsigned status = up.status();
    if (status != 200 && status != 206) co_return co_await forward_error(req, up, keep_alive);

    http::response<http::buffer_body> res{static_cast<http::status>(status), 11};
    auto ct = up.fields()[http::field::content_type];
    res.set(http::field::content_type, ct.empty() ? "application/octet-stream" : ct);
    if (status == 206) {
      auto cr = up.fields()[http::field::content_range];
      if (!cr.empty()) res.set(http::field::content_range, cr);
    }
    res.set(http::field::accept_ranges, "bytes");
    res.set(http::field::etag, "\"" + digest.str() + "\"");
    res.set("Docker-Content-Digest", digest.str());
    // A full body is checked against the digest on the way through (not a multipart body).
    // (Built before the co_await: g++ 12 destroys a conditional's temporary in a co_await
    // argument twice.)
    std::optional<oci::digest> verify;
    if (status == 200 && req.method() == http::verb::get) verify = digest;
    co_return co_await relay(req, up, std::move(res), keep_alive, std::move(verify));
  }

  asio::awaitable<bool> listing(const request& req, const route& r, const upstream_choice& choice,
                                registry::upstream_client& client, bool keep_alive) {
    exchange_.from = metrics::source::upstream;
    const std::string path =
        r.kind == route_kind::tags_list ? "tags/list" : "referrers/" + r.reference;
    auto result = co_await registry::get_listing(client, choice.repository, path, r.params,
                                                 req.method() == http::verb::head);
    if (auto* f = std::get_if<registry::upstream_failure>(&result)) {
      co_return co_await send_failure(req, client, *f, keep_alive);
    }
    auto& up = *std::get<std::unique_ptr<registry::upstream_response>>(result);
    if (!is_success(up.status())) co_return co_await forward_error(req, up, keep_alive);
    http::response<http::buffer_body> res{static_cast<http::status>(up.status()), 11};
    for (auto field : {http::field::content_type}) {
      if (auto v = up.fields()[field]; !v.empty()) res.set(field, v);
    }
    if (auto v = up.fields()["OCI-Filters-Applied"]; !v.empty()) res.set("OCI-Filters-Applied", v);
    if (auto link = up.fields()[http::field::link]; !link.empty()) {
      // Paging links name the repository as the upstream knows it; put the prefix back.
      std::string value(link);
      const std::string from = "</v2/" + choice.repository + "/";
      if (!choice.prefix.empty() && value.starts_with(from)) {
        value = "</v2/" + choice.prefix + "/" + choice.repository + "/" + value.substr(from.size());
      }
      res.set(http::field::link, value);
    }
    co_return co_await relay(req, up, std::move(res), keep_alive, std::nullopt);
  }

  // Streams the upstream body to the client as it arrives. With `verify`, the body is hashed
  // and its last piece is held back until the digest matches: a client never receives a
  // complete wrong blob.
  asio::awaitable<bool> relay(const request& req, registry::upstream_response& up,
                              http::response<http::buffer_body> res, bool keep_alive,
                              std::optional<oci::digest> verify) {
    res.set("Docker-Distribution-API-Version", api_version);
    res.keep_alive(keep_alive && !worker_.draining);
    const auto length = up.content_length();
    if (req.method() == http::verb::head) co_return co_await send_head(req, res, length);
    if (length) {
      res.content_length(*length);
    } else {
      res.chunked(true);
    }
    http::response_serializer<http::buffer_body> sr{res};
    if (!co_await start_body(res, sr)) co_return false;
    std::optional<oci::hasher> hash;
    if (verify) hash.emplace(verify->algorithm());
    std::vector<char> buf(relay_buffer_size);
    std::uint64_t sent = 0;
    for (;;) {
      auto [rec, got] = co_await up.read_some(buf.data(), buf.size());
      if (rec) {
        log::warn("proxy", "upstream body from ", up.where, " failed after ", sent,
                  " bytes: ", rec.message());
        co_return false;  // cut the client off: it must not mistake a short body for a whole
      }
      if (got == 0) break;
      if (hash) {
        hash->update(buf.data(), got);
        if (up.done()) {
          const auto actual = hash->finish();
          hash.reset();
          if (actual != *verify) {
            log::error("proxy", "digest mismatch from ", up.where, ": expected ", verify->str(),
                       ", got ", actual.str(), "; connection cut before the last byte");
            if (worker_.metrics != nullptr) worker_.metrics->digest_failure("stream");
            co_return false;
          }
        }
      }
      if (!co_await write_piece(res, sr, buf.data(), got)) co_return false;
      sent += got;
    }
    if (hash && hash->finish() != *verify) {  // an empty body that should not be empty
      log::error("proxy", "digest mismatch from ", up.where, " (empty body)");
      if (worker_.metrics != nullptr) worker_.metrics->digest_failure("stream");
      co_return false;
    }
    const bool finished = co_await finish_body(res, sr);
    co_return finished&& res.keep_alive();
  }

  Stream& stream_;
  worker_context& worker_;
  beast::flat_buffer buffer_;
  bool idle_ = false;
  exchange exchange_;
  // The upstream client and repository of the request being handled (set once routed).
  struct current_request {
    registry::upstream_client* client = nullptr;
    const std::string* repository = nullptr;
    const std::string* reference = nullptr;  // of a manifest request: a tag or a digest
  } current_;

  // The request being answered named a tag that resolved to `d`: its profile will carry it.
  void note_tag(const oci::digest& d) {
    if (worker_.prefetch == nullptr || current_.reference == nullptr ||
        oci::digest::parse(*current_.reference)) {
      return;
    }
    worker_.prefetch->tag_seen(d, current_.client->settings().name, *current_.repository,
                               *current_.reference);
  }

  // A manifest is being sent to a client (GET, 200; or HEAD, see manifest_served): recording
  // and prefetch start here.
  void note_manifest(const oci::digest& d, std::string_view media_type, std::string_view body,
                     bool head = false) {
    if (worker_.prefetch == nullptr && worker_.blobs == nullptr) return;
    const auto m = oci::parse_manifest(body, media_type);
    if (!m || m->is_index()) return;
    // The client's GETs of the blobs it lists follow: their sizes spare each an upstream HEAD.
    if (worker_.blobs != nullptr && !head && current_.client != nullptr) {
      worker_.blobs->learn_sizes(*current_.client, m->blobs());
    }
    if (worker_.prefetch == nullptr || current_.client == nullptr) return;
    note_tag(d);
    worker_.prefetch->manifest_served(stream_.get_executor(), *current_.client,
                                      *current_.repository, d, media_type, *m, body.size(),
                                      head ? prefetcher::trigger::head : prefetcher::trigger::get);
  }
  std::string client_ = client_address();

  std::string client_address() {
    boost::system::error_code ec;
    const auto ep = lowest().socket().remote_endpoint(ec);
    if (ec) return "-";
    const auto a = ep.address();
    const std::string host = a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
    return host + ":" + std::to_string(ep.port());
  }
};

// Counts the connection while it is open.
struct connection_count {
  explicit connection_count(std::atomic<std::uint64_t>& n) : n_(n) { ++n_; }
  ~connection_count() { --n_; }
  connection_count(const connection_count&) = delete;
  connection_count& operator=(const connection_count&) = delete;
  std::atomic<std::uint64_t>& n_;
};

}  // namespace

asio::awaitable<void> serve_connection(asio::ip::tcp::socket socket, asio::ssl::context* tls,
                                       worker_context& worker) {
  connection_count counted(worker.open_connections);
  boost::system::error_code ec;
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  if (tls == nullptr) {
    beast::tcp_stream stream(std::move(socket));
    session<beast::tcp_stream> s(stream, worker);
    co_await s.run();
    co_return;
  }
  beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls);
  beast::get_lowest_layer(stream).expires_after(worker.cfg.server.timeouts.request_header);
  auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::server, use_nothrow);
  if (hec) {
    log::debug("server", "TLS handshake failed: ", hec.message());
    co_return;
  }
  session<beast::ssl_stream<beast::tcp_stream>> s(stream, worker);
  co_await s.run();
}

}  // namespace layercache::server
