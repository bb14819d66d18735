#include "server/admin.hpp"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <cstdio>
#include <random>

#include "asio/offload.hpp"
#include "cache/chunk_store.hpp"
#include "content/blob_source.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "net/address_policy.hpp"
#include "oci/digest.hpp"
#include "registry/auth.hpp"
#include "server/client_auth.hpp"
#include "server/prefetch.hpp"
#include "server/preload.hpp"
#include "server/upstream_select.hpp"

namespace layercache::server {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
// Request bodies: a preload request, or an imported profile (up to 65536 entries).
constexpr std::size_t max_admin_body = std::size_t{16} * 1024 * 1024;
constexpr std::size_t default_blob_limit = 1000;
// Async preloads: running at once, and kept (running and ended) for GET /admin/preload/<id>.
constexpr std::size_t max_running_preloads = 16;
constexpr std::size_t max_preload_jobs = 64;

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

response json_response(http::status status, const boost::json::value& body) {
  response res{status, 11};
  res.set(http::field::content_type, "application/json");
  res.body() = boost::json::serialize(body);
  res.body() += '\n';
  return res;
}

response error_response(http::status status, std::string_view message) {
  return json_response(status, boost::json::object{{"error", message}});
}

// Constant-time comparison of the presented bearer token with the configured one.
bool token_ok(const request& req, const std::string& token) {
  const auto auth = req[http::field::authorization];
  constexpr std::string_view prefix = "Bearer ";
  return auth.starts_with(prefix) && same_secret(auth.substr(prefix.size()), token);
}

// `Content-Type: application/json` (any parameters), which no simple cross-site request has.
bool is_json(std::string_view content_type) {
  const auto type = content_type.substr(0, content_type.find(';'));
  std::string t;
  for (char c : type) {
    if (c != ' ' && c != '\t') t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return t == "application/json";
}

boost::json::object blob_json(const cache::blob_entry& e) {
  return boost::json::object{
      {"digest", e.digest.str()},
      {"size", e.record.size},
      {"stored_bytes", e.record.stored_bytes},
      {"chunk_size", e.record.chunk_size},
      {"verified", e.record.verified},
      {"last_access", e.record.last_access},
      {"hits", e.record.hits},
  };
}

class admin_session final : public session_base {
 public:
  admin_session(beast::tcp_stream& stream, admin_context& admin) : stream_(stream), admin_(admin) {
    admin_.worker.sessions.insert(this);
  }
  ~admin_session() override { admin_.worker.sessions.erase(this); }
  admin_session(const admin_session&) = delete;
  admin_session& operator=(const admin_session&) = delete;

  void close_if_idle() override {
    if (idle_) close_now();
  }
  void close_now() override {
    boost::system::error_code ec;
    stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  asio::awaitable<void> run() {
    const auto& timeouts = admin_.cfg.server.timeouts;
    bool first = true;
    while (!admin_.worker.draining) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(admin_.cfg.server.max_header_size));
      parser.body_limit(max_admin_body);
      stream_.expires_after(first ? timeouts.request_header : timeouts.idle);
      idle_ = !first;
      first = false;
      auto [ec, n] = co_await http::async_read(stream_, buffer_, parser, use_nothrow);
      idle_ = false;
      if (ec) {
        if (ec != http::error::end_of_stream && ec != asio::error::operation_aborted &&
            ec != beast::error::timeout && ec != asio::error::eof &&
            ec != asio::error::connection_reset) {
          response res = error_response(http::status::bad_request, "malformed request");
          res.keep_alive(false);
          co_await write(res);
        }
        break;
      }
      if (parser.get().count(http::field::transfer_encoding) > 0 && !parser.chunked()) {
        // An unknown coding: the body's end is unknown, nothing after it is read (RFC 9112).
        response res = error_response(http::status::bad_request, "unsupported Transfer-Encoding");
        res.keep_alive(false);
        co_await write(res);
        break;
      }
      request req = parser.release();
      response res = co_await handle(req);
      res.keep_alive(req.keep_alive() && !admin_.worker.draining);
      if (!co_await write(res) || !res.keep_alive()) break;
    }
    boost::system::error_code ec;
    stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    stream_.close();
  }

 private:
  asio::awaitable<bool> write(response& res) {
    res.version(11);
    res.prepare_payload();
    stream_.expires_after(admin_.cfg.server.timeouts.write);
    auto [ec, n] = co_await http::async_write(stream_, res, use_nothrow);
    co_return !ec;
  }

  // Refusals for requests a web page could have sent: a Host that is not this listener (DNS
  // rebinding), a state-changing admin call without JSON when no token guards it (a simple
  // cross-site request).
  std::optional<response> refusal(const request& req, const std::string& path, bool get) const {
    const auto& a = admin_.cfg.admin;
    if (!net::admin_host_allowed(req[http::field::host], a.host, admin_.port, a.hosts)) {
      return error_response(http::status::forbidden,
                            "the Host header does not name this listener (see admin.hosts)");
    }
    // With a token, /admin/* needs it (below), and no page can send it without a preflight.
    if (!get && a.token.empty() && path.starts_with("/admin/") &&
        !is_json(req[http::field::content_type])) {
      return error_response(http::status::unsupported_media_type,
                            "a request that changes state needs Content-Type: application/json");
    }
    return std::nullopt;
  }

  asio::awaitable<response> handle(const request& req) {
    const auto parsed = boost::urls::parse_origin_form(req.target());
    if (!parsed) co_return error_response(http::status::bad_request, "bad request target");
    const std::string path = parsed->path();
    const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
    if (auto refused = refusal(req, path, get)) co_return std::move(*refused);
    if (auto res = probe(req, path, get)) co_return std::move(*res);
    if (!path.starts_with("/admin/")) {
      co_return error_response(http::status::not_found, "unknown path " + path);
    }
    if (!admin_.cfg.admin.token.empty() && !token_ok(req, admin_.cfg.admin.token)) {
      co_return unauthorized();
    }
    if (path == "/admin/stats") {
      if (!get) co_return not_allowed("GET");
      co_return co_await stats();
    }
    if (admin_.store == nullptr) {
      co_return error_response(http::status::conflict, "the cache is disabled");
    }
    if (path == "/admin/blobs") co_return co_await blobs(req, *parsed, get);
    if (path.starts_with("/admin/blobs/")) {
      if (req.method() != http::verb::delete_) co_return not_allowed("DELETE");
      const auto d = oci::digest::parse(path.substr(std::string_view("/admin/blobs/").size()));
      if (!d) co_return error_response(http::status::bad_request, "not a digest");
      co_return co_await purge_one(*d);
    }
    if (path == "/admin/profiles" || path.starts_with("/admin/profiles/")) {
      co_return co_await profiles(req, path, get);
    }
    if (path == "/admin/preload") {
      if (req.method() != http::verb::post) co_return not_allowed("POST");
      co_return co_await preload_image(req.body());
    }
    if (path.starts_with("/admin/preload/")) {
      if (!get) co_return not_allowed("GET");
      co_return preload_status(path.substr(std::string_view("/admin/preload/").size()));
    }
    if (path == "/admin/resolve") {
      if (!get) co_return not_allowed("GET");
      co_return co_await resolve(*parsed);
    }
    co_return error_response(http::status::not_found, "unknown path " + path);
  }

  // /healthz, /readyz and /metrics (which needs the token only with metrics_need_token);
  // nothing for other paths.
  std::optional<response> probe(const request& req, const std::string& path, bool get) const {
    if (path == "/healthz") {
      if (!get) return not_allowed("GET");
      return json_response(http::status::ok, boost::json::object{{"status", "ok"}});
    }
    if (path == "/readyz") {
      if (!get) return not_allowed("GET");
      if (admin_.ready.load() && !admin_.worker.draining) {
        return json_response(http::status::ok, boost::json::object{{"status", "ready"}});
      }
      return json_response(http::status::service_unavailable,
                           boost::json::object{{"status", "not ready"}});
    }
    if (path == "/metrics") {
      if (!get) return not_allowed("GET");
      if (admin_.cfg.admin.metrics_need_token && !token_ok(req, admin_.cfg.admin.token)) {
        return unauthorized();
      }
      response res{http::status::ok, 11};
      res.set(http::field::content_type, metrics::content_type);
      res.body() = admin_.metrics.serialize();
      return res;
    }
    return std::nullopt;
  }

  // /admin/blobs: GET lists (at most ?limit= blobs), DELETE purges all.
  asio::awaitable<response> blobs(const request& req, const boost::urls::url_view& url, bool get) {
    if (get) {
      std::size_t limit = default_blob_limit;
      if (auto it = url.params().find("limit"); it != url.params().end()) {
        const std::string text = (*it).value;
        char* end = nullptr;
        const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
        if (text.empty() || *end != '\0') {
          co_return error_response(http::status::bad_request, "limit must be a number");
        }
        limit = static_cast<std::size_t>(v);
      }
      co_return co_await list_blobs(limit);
    }
    if (req.method() == http::verb::delete_) co_return co_await purge_all();
    co_return not_allowed("GET, DELETE");
  }

  // /admin/profiles (GET: the list) and /admin/profiles/<manifest digest> (profile()).
  asio::awaitable<response> profiles(const request& req, const std::string& path, bool get) {
    if (admin_.prefetch == nullptr) {
      co_return error_response(http::status::conflict, "prefetch is disabled");
    }
    if (path == "/admin/profiles") {
      if (!get) co_return not_allowed("GET");
      auto* p = admin_.prefetch;
      auto text = co_await admin_.pool->run([p] { return p->list_profiles_json(); });
      co_return json_text(http::status::ok, std::move(text));
    }
    const auto d = oci::digest::parse(path.substr(std::string_view("/admin/profiles/").size()));
    if (!d) co_return error_response(http::status::bad_request, "not a digest");
    co_return co_await profile(req, *d);
  }

  static response json_text(http::status status, std::string text) {
    response res{status, 11};
    res.set(http::field::content_type, "application/json");
    res.body() = std::move(text);
    res.body() += '\n';
    return res;
  }

  // GET: export (the profile document); PUT: import (replaces); DELETE.
  asio::awaitable<response> profile(const request& req, const oci::digest& d) {
    auto* p = admin_.prefetch;
    switch (req.method()) {
      case http::verb::get:
      case http::verb::head: {
        auto text = co_await admin_.pool->run([p, &d] { return p->export_profile(d); });
        if (!text) co_return error_response(http::status::not_found, d.str() + " has no profile");
        co_return json_text(http::status::ok, std::move(*text));
      }
      case http::verb::put: {
        std::string error;
        const std::string& body = req.body();
        const bool ok = co_await admin_.pool->run(
            [p, &d, &body, &error] { return p->import_profile(d, body, error); });
        if (!ok) co_return error_response(http::status::bad_request, error);
        log::info("admin", "imported the profile of ", d.str());
        co_return json_response(http::status::ok, boost::json::object{{"imported", d.str()}});
      }
      case http::verb::delete_: {
        const bool existed = co_await admin_.pool->run([p, &d] { return p->erase_profile(d); });
        if (!existed)
          co_return error_response(http::status::not_found, d.str() + " has no profile");
        co_return json_response(http::status::ok, boost::json::object{{"deleted", d.str()}});
      }
      default:
        co_return not_allowed("GET, PUT, DELETE");
    }
  }

  static response not_allowed(std::string_view allow) {
    response res = error_response(http::status::method_not_allowed, "method not allowed");
    res.set(http::field::allow, allow);
    return res;
  }

  static response unauthorized() {
    response res = error_response(http::status::unauthorized, "a bearer token is required");
    res.set(http::field::www_authenticate, "Bearer realm=\"layercache-admin\"");
    return res;
  }

  asio::awaitable<response> stats() {
    boost::json::object out;
    out["open_connections"] = admin_.worker.open_connections.load();
    out["ready"] = admin_.ready.load();
    if (admin_.store != nullptr) {
      auto* store = admin_.store;
      const auto s = co_await admin_.pool->run([store] { return store->stats(); });
      out["store"] = boost::json::object{
          {"path", admin_.cfg.cache.path},      {"blobs", s.blobs},
          {"verified_blobs", s.verified_blobs}, {"chunks", s.chunks},
          {"used_bytes", s.used_bytes},         {"capacity_bytes", s.capacity},
          {"evicted_blobs", s.evicted_blobs},   {"evicted_bytes", s.evicted_bytes},
          {"corrupt_chunks", s.corrupt_chunks},
      };
    }
    if (admin_.blobs != nullptr) {
      const auto b = admin_.blobs->stats();
      out["fills"] = boost::json::object{
          {"started", b.fills_started},       {"in_flight_chunks", b.chunks_in_flight},
          {"chunks_filled", b.chunks_filled}, {"chunks_from_store", b.chunks_from_store},
          {"chunks_joined", b.chunks_joined}, {"store_errors", b.store_errors},
          {"verified", b.verified},           {"digest_failures", b.digest_failures},
      };
    }
    boost::json::array ups;
    for (const auto& u : admin_.cfg.upstreams) {
      ups.push_back(
          boost::json::object{{"name", u.name}, {"url", u.url}, {"default", u.is_default}});
    }
    out["upstreams"] = std::move(ups);
    co_return json_response(http::status::ok, out);
  }

  asio::awaitable<response> list_blobs(std::size_t limit) {
    auto* store = admin_.store;
    const auto entries = co_await admin_.pool->run([store] { return store->list_blobs(); });
    boost::json::array blobs;
    for (std::size_t i = 0; i < entries.size() && i < limit; ++i) {
      blobs.push_back(blob_json(entries[i]));
    }
    co_return json_response(http::status::ok,
                            boost::json::object{{"total", entries.size()}, {"blobs", blobs}});
  }

  asio::awaitable<response> purge_one(const oci::digest& d) {
    auto* store = admin_.store;
    const auto record = co_await admin_.pool->run([store, &d] { return store->blob(d); });
    if (!record) co_return error_response(http::status::not_found, d.str() + " is not cached");
    co_await admin_.blobs->purge(d);
    log::info("admin", "purged ", d.str(), " (", record->stored_bytes, " bytes)");
    co_return json_response(http::status::ok, boost::json::object{{"purged", d.str()},
                                                                  {"bytes", record->stored_bytes}});
  }

  asio::awaitable<response> purge_all() {
    auto* store = admin_.store;
    const auto entries = co_await admin_.pool->run([store] { return store->list_blobs(); });
    std::uint64_t bytes = 0;
    for (const auto& e : entries) {
      co_await admin_.blobs->purge(e.digest);
      bytes += e.record.stored_bytes;
    }
    log::info("admin", "purged every blob: ", entries.size(), " blobs, ", bytes, " bytes");
    co_return json_response(
        http::status::ok, boost::json::object{{"purged_blobs", entries.size()}, {"bytes", bytes}});
  }

  // POST /admin/preload: the answer when the preload ended; with "async": true, 202 and an
  // id at once (the upstream chosen first: a reference no upstream takes is refused now).
  asio::awaitable<response> preload_image(const std::string& body) {
    boost::system::error_code ec;
    const boost::json::value v = boost::json::parse(body, ec);
    const auto* obj = ec ? nullptr : v.if_object();
    if (obj == nullptr) co_return error_response(http::status::bad_request, "body must be JSON");
    preload_request pr;
    const auto text = [&](std::string_view key, std::string& out) {
      if (const auto* f = obj->if_contains(key)) {
        if (!f->is_string()) return false;
        out = std::string(f->as_string());
      }
      return true;
    };
    std::string what = "image";
    bool async = false;
    if (const auto* f = obj->if_contains("async")) {
      if (!f->is_bool()) co_return error_response(http::status::bad_request, "async is a bool");
      async = f->as_bool();
    }
    if (!text("reference", pr.reference) || pr.reference.empty() ||
        !text("upstream", pr.upstream) || !text("platform", pr.platform) || !text("what", what) ||
        (what != "image" && what != "start")) {
      co_return error_response(http::status::bad_request,
                               "expected {\"reference\": \"...\"} (upstream and platform are "
                               "optional strings, what is \"image\" or \"start\", async a bool)");
    }
    pr.start = what == "start";
    preload_services with = *admin_.preloads;
    with.stop = &admin_.worker.draining;
    if (async) co_return start_job(with, std::move(pr));
    const bool start = pr.start;
    const preload_result r = co_await preload(with, std::move(pr));
    if (!r.ok) co_return error_response(static_cast<http::status>(r.status), r.error);
    co_return json_response(http::status::ok, result_json(r, start));
  }

  static boost::json::object result_json(const preload_result& r, bool start) {
    boost::json::object out{{"digest", r.digest},
                            {"upstream", r.upstream},
                            {"repository", r.repository},
                            {"manifests", r.manifests}};
    if (start) {
      out["replays"] = r.replays;
      out["profiles_held"] = r.profiles_held;
    } else {
      out["blobs"] = r.blobs;
      out["bytes"] = r.bytes;
      out["fetched_bytes"] = r.fetched_bytes;
    }
    return out;
  }

  // Registers an async preload and spawns it on this worker.
  response start_job(const preload_services& with, preload_request pr) {
    auto chosen = select_image_upstream(admin_.cfg, pr.reference, pr.upstream);
    if (auto* e = std::get_if<route_error>(&chosen)) {
      return error_response(
          static_cast<http::status>(e->status),
          e->code == "NAME_INVALID" ? "not an image reference: " + pr.reference : e->message);
    }
    auto& jobs = admin_.preload_jobs;
    std::size_t running = 0;
    for (const auto& [id, j] : jobs) running += j->result ? 0 : 1;
    if (running >= max_running_preloads) {
      return error_response(http::status::too_many_requests,
                            "too many preloads running (" + std::to_string(running) + ")");
    }
    forget_ended_jobs();
    auto job = std::make_shared<preload_job>();
    job->id = new_job_id();
    job->serial = ++admin_.preload_serial;
    job->reference = pr.reference;
    job->platform = pr.platform;
    job->start = pr.start;
    jobs.emplace(job->id, job);
    asio::co_spawn(stream_.get_executor(), run_job(with, std::move(pr), job), asio::detached);
    response res = json_response(
        http::status::accepted,
        boost::json::object{{"id", job->id},
                            {"reference", job->reference},
                            {"upstream", std::get<upstream_choice>(chosen).upstream->name}});
    res.set(http::field::location, "/admin/preload/" + job->id);
    return res;
  }

  // Keeps at most max_preload_jobs - 1 jobs, dropping the oldest ended ones.
  void forget_ended_jobs() {
    auto& jobs = admin_.preload_jobs;
    while (jobs.size() >= max_preload_jobs) {
      auto oldest = jobs.end();
      for (auto it = jobs.begin(); it != jobs.end(); ++it) {
        if (it->second->result &&
            (oldest == jobs.end() || it->second->serial < oldest->second->serial)) {
          oldest = it;
        }
      }
      if (oldest == jobs.end()) return;
      jobs.erase(oldest);
    }
  }

  static std::string new_job_id() {
    std::random_device random;
    const std::uint64_t n = (std::uint64_t{random()} << 32) | random();
    std::array<char, 17> text{};
    (void)std::snprintf(text.data(), text.size(), "%016llx", static_cast<unsigned long long>(n));
    return text.data();
  }

  // Owns what it uses (a copy of the services' references, the job): the session that
  // started it may be gone.
  static asio::awaitable<void> run_job(preload_services with, preload_request pr,
                                       std::shared_ptr<preload_job> job) {
    job->result = co_await preload(with, std::move(pr), &job->progress);
  }

  // GET /admin/preload/<id>
  response preload_status(std::string_view id) const {
    const auto it = admin_.preload_jobs.find(std::string(id));
    if (it == admin_.preload_jobs.end()) {
      return error_response(http::status::not_found, "no preload " + std::string(id) +
                                                         " (ended ones are kept a while only)");
    }
    const preload_job& job = *it->second;
    const auto& p = job.progress;
    boost::json::object out;
    if (job.result) out = result_json(*job.result, job.start);
    out["id"] = job.id;
    out["reference"] = job.reference;
    out["platform"] = job.platform;
    out["state"] = !job.result ? "running" : job.result->ok ? "done" : "failed";
    out["manifests"] = p.manifests;
    out["listed"] = p.listed;
    out["blobs_total"] = p.blobs_total;
    out["bytes_total"] = p.bytes_total;
    out["blobs"] = p.blobs;
    out["bytes"] = p.bytes;
    if (job.result && !job.result->ok) {
      out["status"] = job.result->status;
      out["error"] = job.result->error;
    }
    return json_response(http::status::ok, out);
  }

  // GET /admin/resolve?reference=...[&upstream=...][&platform=...]
  asio::awaitable<response> resolve(const boost::urls::url_view& url) {
    preload_request pr;
    const auto param = [&url](std::string_view key, std::string& out) {
      if (auto it = url.params().find(key); it != url.params().end()) out = (*it).value;
    };
    param("reference", pr.reference);
    param("upstream", pr.upstream);
    param("platform", pr.platform);
    if (pr.reference.empty()) {
      co_return error_response(http::status::bad_request, "expected ?reference=IMAGE");
    }
    const auto r = co_await resolve_image(*admin_.preloads, pr);
    if (!r.failure.ok) {
      co_return error_response(static_cast<http::status>(r.failure.status), r.failure.error);
    }
    if (r.images.size() != 1) {
      co_return error_response(http::status::bad_request, "platform " + pr.platform + " names " +
                                                              std::to_string(r.images.size()) +
                                                              " manifests of " + pr.reference +
                                                              "; name one (os/arch[/variant])");
    }
    const auto& image = r.images.front();
    boost::json::object out{{"reference", pr.reference},          {"upstream", r.failure.upstream},
                            {"repository", r.failure.repository}, {"platform", pr.platform},
                            {"digest", image.digest.str()},       {"media_type", image.media_type}};
    if (r.failure.digest != image.digest.str()) out["index"] = r.failure.digest;
    co_return json_response(http::status::ok, out);
  }

  beast::tcp_stream& stream_;
  admin_context& admin_;
  beast::flat_buffer buffer_;
  bool idle_ = false;
};

}  // namespace

asio::awaitable<void> serve_admin_connection(asio::ip::tcp::socket socket, admin_context& admin) {
  // Counted by the accept loop when it spawned this; uncounted however this ends.
  // NOLINTNEXTLINE(cppcoreguidelines-special-member-functions): a scope guard, never copied
  struct counted {
    admin_context& a;
    ~counted() { --a.open; }
  } count{admin};
  boost::system::error_code ec;
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  beast::tcp_stream stream(std::move(socket));
  admin_session s(stream, admin);
  co_await s.run();
}

}  // namespace layercache::server
