#include <boost/beast/http/field.hpp>
#include <vector>

#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "oci/media_types.hpp"
#include "registry/distribution.hpp"
#include "registry/mirrors.hpp"
#include "server/client_auth.hpp"
#include "server/handlers.hpp"

namespace layercache::server {
namespace {

constexpr std::size_t relay_buffer_size = std::size_t{256} * 1024;
constexpr std::size_t max_error_body = std::size_t{64} * 1024;

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

// Streams an upstream body to the client as it arrives.
class relay final : public body_source {
 public:
  relay(std::unique_ptr<registry::upstream_response> up, std::optional<oci::digest> verify,
        metrics::registry& metrics)
      : up_(std::move(up)), verify_(std::move(verify)), metrics_(metrics) {}

  asio::awaitable<end> write(const piece_sink& out) override {
    std::optional<oci::hasher> hash;
    if (verify_) hash.emplace(verify_->algorithm());
    std::vector<char> buf(relay_buffer_size);
    std::uint64_t sent = 0;
    for (;;) {
      auto [rec, got] = co_await up_->read_some(buf.data(), buf.size());
      if (rec) {
        log::warn("proxy", "upstream body from ", up_->where, " failed after ", sent,
                  " bytes: ", rec.message());
        co_return end::cut;  // the client must not mistake a short body for a whole one
      }
      if (got == 0) break;
      if (hash) hash->update(buf.data(), got);
      if (hash && up_->done()) {  // the last piece: held back until the digest matches
        const auto actual = hash->finish();
        hash.reset();
        if (actual != *verify_) {
          log::error("proxy", "digest mismatch from ", up_->where, ": expected ", verify_->str(),
                     ", got ", actual.str(), "; connection cut before the last byte");
          metrics_.digest_failure("stream");
          co_return end::cut;
        }
      }
      if (!co_await out(buf.data(), got)) co_return end::cut;
      sent += got;
    }
    if (hash && hash->finish() != *verify_) {  // an empty body that should not be empty
      log::error("proxy", "digest mismatch from ", up_->where, " (empty body)");
      metrics_.digest_failure("stream");
      co_return end::cut;
    }
    co_return end::done;
  }

 private:
  std::unique_ptr<registry::upstream_response> up_;
  std::optional<oci::digest> verify_;
  metrics::registry& metrics_;
};

// A Link header naming the repository as the upstream knows it, given back the client's
// prefix (paging links of tag lists and referrers).
std::string client_link(std::string_view link, const upstream_choice& choice) {
  std::string value(link);
  const std::string from = "</v2/" + choice.repository + "/";
  if (!choice.prefix.empty() && value.starts_with(from)) {
    value = "</v2/" + choice.prefix + "/" + choice.repository + "/" + value.substr(from.size());
  }
  return value;
}

bool client_authorized(const request& req, const std::string& token) {
  if (token.empty()) return true;
  for (auto [it, end] = req.equal_range(http::field::authorization); it != end; ++it) {
    if (client_credentials_ok(it->value(), token)) return true;
  }
  return false;
}

// Every Accept header a client sent, joined (Go's net/http in skopeo and containerd sends one
// per media type); the default when there is none.
std::string joined_accept(const request& req) {
  std::string accept;
  for (auto [it, end] = req.equal_range(http::field::accept); it != end; ++it) {
    if (!accept.empty()) accept += ", ";
    accept += it->value();
  }
  if (accept.empty()) accept = oci::default_manifest_accept();
  return accept;
}

// The manifest, blob or listing handler's answer to a routed request.
asio::awaitable<answer> dispatch(const services& s, const request_context& rc) {
  switch (rc.r.kind) {
    case route_kind::manifest: {
      const std::string accept = joined_accept(rc.req);
      co_return co_await s.manifests.manifest(rc, accept);
    }
    case route_kind::blob:
      co_return co_await s.blobs.blob(rc);
    default:
      co_return co_await listing(rc, s.metrics);
  }
}

// GET /v2/ without credentials, for an upstream with access: client (the one `?ns=` names, or
// the default): its gate, which answers with the upstream's challenge. Null otherwise.
access_gate* base_gate(const config::config& cfg, access_gates& gates, const route& r,
                       const request& req) {
  if (gates.empty() || req.find(http::field::authorization) != req.end()) return nullptr;
  auto chosen = select_upstream(cfg, "_", r.ns);
  auto* choice = std::get_if<upstream_choice>(&chosen);
  if (choice == nullptr) return nullptr;
  auto it = gates.find(choice->upstream->name);
  return it == gates.end() ? nullptr : it->second.get();
}

}  // namespace

answer error_answer(unsigned status, std::string_view code, std::string_view message) {
  answer a;
  a.status = status;
  a.fields.set(http::field::content_type, "application/json");
  a.body = oci_error_body(code, message);
  if (status == 405) a.fields.set(http::field::allow, "GET, HEAD");
  return a;
}

answer failure_answer(const registry::upstream_client& client,
                      const registry::upstream_failure& f) {
  log::warn("proxy", "upstream ", client.settings().name, ": ", f.message);
  const std::string message = "upstream " + client.settings().name + ": " + f.message;
  return error_answer(f.http_status(), f.oci_code(), message);
}

asio::awaitable<answer> forwarded_error(const request& req, registry::upstream_response& up) {
  answer a;
  a.status = up.status();
  if (auto ct = up.fields()[http::field::content_type]; !ct.empty()) {
    a.fields.set(http::field::content_type, ct);
  }
  if (auto ra = up.fields()[http::field::retry_after]; !ra.empty()) {
    a.fields.set(http::field::retry_after, ra);
  }
  if (auto cr = up.fields()[http::field::content_range]; !cr.empty() && up.status() == 416) {
    a.fields.set(http::field::content_range, cr);
  }
  if (req.method() != http::verb::head) {
    auto [ec, body] = co_await up.read_all(max_error_body);
    if (ec) {
      a.fields.set(http::field::content_type, "application/json");
      body = oci_error_body("UNKNOWN", "upstream answered " + std::to_string(up.status()));
    }
    a.body = std::move(body);
  }
  co_return a;
}

std::unique_ptr<body_source> relayed_body(std::unique_ptr<registry::upstream_response> up,
                                          std::optional<oci::digest> verify,
                                          metrics::registry& metrics) {
  return std::make_unique<relay>(std::move(up), std::move(verify), metrics);
}

asio::awaitable<answer> listing(const request_context& rc, metrics::registry& metrics) {
  rc.record.from = metrics::source::upstream;
  const std::string path =
      rc.r.kind == route_kind::tags_list ? "tags/list" : "referrers/" + rc.r.reference;
  auto result =
      co_await registry::get_listing(rc.client, rc.choice.repository, path, rc.r.params, rc.head());
  if (auto* f = std::get_if<registry::upstream_failure>(&result)) {
    co_return failure_answer(rc.client, *f);
  }
  auto up = std::move(std::get<std::unique_ptr<registry::upstream_response>>(result));
  if (!up->success()) co_return co_await forwarded_error(rc.req, *up);
  answer a;
  a.status = up->status();
  if (auto v = up->fields()[http::field::content_type]; !v.empty()) {
    a.fields.set(http::field::content_type, v);
  }
  if (auto v = up->fields()["OCI-Filters-Applied"]; !v.empty()) {
    a.fields.set("OCI-Filters-Applied", v);
  }
  if (auto link = up->fields()[http::field::link]; !link.empty()) {
    a.fields.set(http::field::link, client_link(link, rc.choice));
  }
  a.length = up->content_length();
  a.header_first = true;
  a.stream = std::make_unique<relay>(std::move(up), std::nullopt, metrics);
  co_return a;
}

asio::awaitable<answer> handle_request(const services& s, upstream_clients& clients,
                                       access_gates& gates, const request& req, exchange& record,
                                       const asio::any_io_executor& ex) {
  if (!client_authorized(req, s.cfg.server.client_token)) {
    answer a = error_answer(401, "UNAUTHORIZED", "this mirror needs client credentials");
    a.fields.set(http::field::www_authenticate, "Basic realm=\"layercache\"");
    co_return a;
  }
  auto parsed = parse_route(req.target());
  if (auto* e = std::get_if<route_error>(&parsed)) {
    co_return error_answer(e->status, e->code, e->message);
  }
  const route& r = std::get<route>(parsed);
  record.kind = metrics_route(r.kind);
  const std::string_view via = req[http::field::via];
  const bool from_layercache = registry::via_names_layercache(via);
  if (from_layercache && !s.via.empty() && registry::via_names(via, s.via)) {
    co_return error_answer(508, "UNSUPPORTED",
                           "request loop: this request came through this layercache before");
  }
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    co_return error_answer(405, "UNSUPPORTED", "this registry mirror is read-only");
  }
  if (r.kind == route_kind::base) {
    if (auto* gate = base_gate(s.cfg, gates, r, req)) co_return co_await gate->challenge();
    answer a;
    a.fields.set(http::field::content_type, "application/json");
    a.body = "{}";
    co_return a;
  }
  auto chosen = select_upstream(s.cfg, r.name, r.ns);
  if (auto* e = std::get_if<route_error>(&chosen)) {
    co_return error_answer(e->status, e->code, e->message);
  }
  const auto& choice = std::get<upstream_choice>(chosen);
  record.upstream = choice.upstream->name;
  registry::upstream_client* chosen_client = clients.find(choice.upstream->name)->second.get();
  access_gate* gate = nullptr;
  std::shared_ptr<registry::upstream_client> held;  // a client presenting this one's credentials
  if (auto it = gates.find(choice.upstream->name); it != gates.end()) {
    gate = it->second.get();
    auto verdict = co_await gate->admit(req, r, choice.repository);
    if (auto* refused = std::get_if<answer>(&verdict)) co_return std::move(*refused);
    auto& in = std::get<access_gate::admitted>(verdict);
    chosen_client = in.client;
    held = std::move(in.keep);
    if (in.blob_size) {  // the check's HEAD told the size: the blob source asks for it no more
      s.blobs.listed(*chosen_client, {oci::descriptor{.digest = *oci::digest::parse(r.reference),
                                                      .size = *in.blob_size}});
    }
  }
  if (from_layercache && chosen_client->mirrors() != nullptr) {
    // Another layercache's fill: from the cache or the origin, never this one's mirrors (a
    // tier that points back at a node must not bounce the request around).
    chosen_client = &chosen_client->mirrors()->origin_only();
  }
  registry::upstream_client& client = *chosen_client;
  const request_context rc{req, record, ex, client, choice, r, gate};
  answer a = co_await dispatch(s, rc);
  a.holds = std::move(held);
  co_return a;
}

}  // namespace layercache::server
