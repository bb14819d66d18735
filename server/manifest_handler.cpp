// Manifests: through the manifest cache (cached_manifests), or from the upstream every time
// (relayed_manifests). Both note what they send: the observer records and replays, the blob
// handler learns the sizes of the blobs listed.
#include <boost/beast/http/field.hpp>

#include "content/manifest_cache.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "oci/digest.hpp"
#include "oci/manifest.hpp"
#include "oci/media_types.hpp"
#include "registry/distribution.hpp"
#include "server/handlers.hpp"

namespace layercache::server {
namespace {

bool is_retryable(unsigned status) { return status >= 500 || status == 429; }

void set_manifest_fields(answer& a, std::string_view digest) {
  a.fields.set("Docker-Content-Digest", digest);
  a.fields.set(http::field::etag, "\"" + std::string(digest) + "\"");
}

// A HEAD answered from the upstream's HEAD answer: no body to hash, so say what the upstream
// says, and what the reference proves.
answer head_answer(registry::upstream_response& up, const std::optional<oci::digest>& requested) {
  answer a;
  const std::string content_type(up.fields()[http::field::content_type]);
  std::string digest(up.fields()["Docker-Content-Digest"]);
  if (requested) digest = requested->str();
  if (!content_type.empty()) a.fields.set(http::field::content_type, content_type);
  if (!digest.empty()) set_manifest_fields(a, digest);
  a.length = up.content_length();
  return a;
}

// What the cached path of a request knows when it goes upstream.
struct cache_state {
  std::string key;                           // tag record to write; empty for a digest
  std::string accept_cls;                    // accept_class() of the request
  std::optional<content::cached_tag> stale;  // served, flagged, when the upstream fails
};

// Through the manifest cache, or (cache_ null) straight through. By digest: from the store,
// else from upstream and stored. By tag: a record confirmed within cache.tag_ttl is served from
// the store; an older one is revalidated with an upstream HEAD (same digest: confirmed and
// served from the store); when the upstream fails, a record confirmed within cache.max_stale is
// served with X-Layercache-Stale.
class manifests final : public manifest_handler {
 public:
  manifests(content::manifest_cache* cache, const config::config& cfg, access_observer& observer,
            blob_handler& blobs, metrics::registry& metrics)
      : cache_(cache), cfg_(cfg), observer_(observer), blobs_(blobs), metrics_(metrics) {}

  asio::awaitable<answer> manifest(const request_context& rc, const std::string& accept) override {
    if (cache_ == nullptr) co_return co_await from_upstream(rc, accept, nullptr);
    rc.record.from = metrics::source::miss;
    cache_state state;
    if (const auto requested = oci::digest::parse(rc.r.reference)) {
      if (auto stored = co_await cache_->manifest(*requested)) {
        co_return stored_answer(rc, *requested, *stored, false);
      }
      co_return co_await from_upstream(rc, accept, &state);
    }
    co_return co_await by_tag(rc, accept, state);
  }

 private:
  asio::awaitable<answer> by_tag(const request_context& rc, const std::string& accept,
                                 cache_state& state) {
    auto& cache = *cache_;
    const auto& upstream = rc.client.settings().name;
    state.accept_cls = content::accept_class(accept);
    state.key = content::tag_key(upstream, rc.choice.repository, rc.r.reference, state.accept_cls);
    auto found =
        co_await cache.lookup_tag(upstream, rc.choice.repository, rc.r.reference, state.accept_cls);
    auto hit = std::move(found.own);
    auto& native = found.native;  // resolved natively, or an imported profile's hint
    if (!hit && native && cache.fresh(native->fetched_at)) std::swap(hit, native);
    if (!hit || !cache.fresh(hit->fetched_at)) {
      rc.client.warm();  // for the blob reads that follow
      // What the tag last named: a profile of it replays now, beside the resolution (wasted
      // only if the tag has moved since).
      if (const auto* last = hit ? &*hit : native ? &*native : nullptr) {
        note_manifest(rc, last->digest, last->manifest.media_type, last->manifest.bytes, true);
      }
    }
    if (!hit) co_return co_await from_upstream(rc, accept, &state);
    if (cache.fresh(hit->fetched_at)) {
      co_return stored_answer(rc, hit->digest, hit->manifest, false);
    }
    co_return co_await revalidate(rc, accept, state, std::move(*hit));
  }

  // A tag record older than tag_ttl: what does the tag name upstream now?
  asio::awaitable<answer> revalidate(const request_context& rc, const std::string& accept,
                                     cache_state& state, content::cached_tag hit) {
    const bool stale_ok = cache_->may_serve_stale(hit.fetched_at);
    auto result =
        co_await registry::head_manifest(rc.client, rc.choice.repository, rc.r.reference, accept);
    if (auto* f = std::get_if<registry::upstream_failure>(&result)) {
      if (stale_ok) co_return stale_answer(rc, hit, f->message);
      co_return failure_answer(rc.client, *f);
    }
    auto up = std::move(std::get<std::unique_ptr<registry::upstream_response>>(result));
    const unsigned status = up->status();
    if (up->success()) {
      if (const auto current = oci::digest::parse(up->fields()["Docker-Content-Digest"])) {
        if (*current == hit.digest) {
          co_await cache_->confirm(state.key, *current);
          co_return stored_answer(rc, hit.digest, hit.manifest, false);
        }
        // Re-tagged to a manifest that may be stored already (e.g. pulled by digest).
        auto other = co_await cache_->manifest(*current);
        if (other && content::accepts(state.accept_cls, other->media_type)) {
          co_await cache_->confirm(state.key, *current);
          co_return stored_answer(rc, *current, *other, false);
        }
      }
      if (rc.head()) co_return head_answer(*up, std::nullopt);
    } else {
      if (is_retryable(status) && stale_ok) {
        co_return stale_answer(rc, hit, "answered " + std::to_string(status));
      }
      if (rc.head()) co_return co_await forwarded_error(rc.req, *up);
    }
    up.reset();  // its connection goes back to the pool for the GET
    if (stale_ok) state.stale = std::move(hit);
    co_return co_await from_upstream(rc, accept, &state);
  }

  // A stored manifest, with the headers a registry sends; HEAD: no body.
  answer stored_answer(const request_context& rc, const oci::digest& digest,
                       const cache::stored_manifest& m, bool stale) {
    rc.record.from = metrics::source::hit;
    answer a;
    a.fields.set(http::field::content_type,
                 m.media_type.empty() ? oci::media_types::oci_manifest : m.media_type);
    set_manifest_fields(a, digest.str());
    if (stale) a.fields.set("X-Layercache-Stale", "true");
    note_manifest(rc, digest, m.media_type, m.bytes, rc.head());
    a.body = m.bytes;
    a.length = m.bytes.size();
    return a;
  }

  answer stale_answer(const request_context& rc, const content::cached_tag& hit,
                      const std::string& reason) {
    log::warn("proxy", "upstream ", rc.client.settings().name, " failed for tag ", rc.r.reference,
              " (", reason, "): serving stale ", hit.digest.str(), ", confirmed ",
              content::manifest_cache::age(hit.fetched_at), "s ago");
    metrics_.stale_serve();
    return stored_answer(rc, hit.digest, hit.manifest, true);
  }

  // The manifest from the upstream, as a GET or HEAD like the client's. With `state` (the
  // cache on): a 200 GET is stored (and the tag record written), a HEAD naming a stored
  // manifest writes the tag record, and an upstream failure serves `state->stale` if there is
  // one.
  asio::awaitable<answer> from_upstream(const request_context& rc, const std::string& accept,
                                        cache_state* state) {
    rc.record.from = state != nullptr ? metrics::source::miss : metrics::source::upstream;
    if (rc.head()) co_return co_await head_from_upstream(rc, accept, state);
    const bool can_be_stale = state != nullptr && state->stale.has_value();
    auto result = co_await registry::get_manifest(rc.client, rc.choice.repository, rc.r.reference,
                                                  accept, cfg_.server.max_manifest_size);
    if (auto* f = std::get_if<registry::manifest_failure>(&result)) {
      using why = registry::manifest_failure::why;
      if (f->kind == why::digest_mismatch) {
        log::error("proxy", "upstream ", rc.client.settings().name, ": ", f->failure.message);
        metrics_.digest_failure("manifest");
        co_return error_answer(502, "MANIFEST_INVALID",
                               "upstream manifest does not match its digest");
      }
      if (f->kind == why::body_too_large) {
        co_return error_answer(502, "MANIFEST_INVALID", f->failure.message);
      }
      if (can_be_stale) co_return stale_answer(rc, *state->stale, f->failure.message);
      co_return failure_answer(rc.client, f->failure);
    }
    if (auto* up = std::get_if<std::unique_ptr<registry::upstream_response>>(&result)) {
      const unsigned status = (*up)->status();
      if (can_be_stale && is_retryable(status)) {
        co_return stale_answer(rc, *state->stale, "answered " + std::to_string(status));
      }
      co_return co_await forwarded_error(rc.req, **up);
    }
    auto& m = std::get<registry::manifest_body>(result);
    if (state != nullptr && m.status == 200) {
      co_await cache_->put(m.digest, m.media_type, m.bytes, state->key);
    }
    if (m.status == 200) note_manifest(rc, m.digest, m.media_type, m.bytes, false);
    answer a;
    a.fields.set(http::field::content_type, m.media_type);
    set_manifest_fields(a, m.digest.str());
    a.body = std::move(m.bytes);
    co_return a;
  }

  // from_upstream for a HEAD: a tag resolved to a manifest already stored writes the tag
  // record (containerd resolves tags with HEAD, then GETs by digest).
  asio::awaitable<answer> head_from_upstream(const request_context& rc, const std::string& accept,
                                             cache_state* state) {
    const bool can_be_stale = state != nullptr && state->stale.has_value();
    auto result =
        co_await registry::head_manifest(rc.client, rc.choice.repository, rc.r.reference, accept);
    if (auto* f = std::get_if<registry::upstream_failure>(&result)) {
      if (can_be_stale) co_return stale_answer(rc, *state->stale, f->message);
      co_return failure_answer(rc.client, *f);
    }
    auto& up = *std::get<std::unique_ptr<registry::upstream_response>>(result);
    const unsigned status = up.status();
    if (can_be_stale && is_retryable(status)) {
      co_return stale_answer(rc, *state->stale, "answered " + std::to_string(status));
    }
    if (!up.success()) co_return co_await forwarded_error(rc.req, up);
    if (state != nullptr && !state->key.empty()) {
      if (const auto d = oci::digest::parse(up.fields()["Docker-Content-Digest"])) {
        co_await note_resolved(rc, *state, *d);
      }
    }
    co_return head_answer(up, oci::digest::parse(rc.r.reference));
  }

  // A HEAD of a tag resolved upstream to `d`: the tag record, when the manifest is stored;
  // otherwise the record waits for the GET by digest that follows.
  asio::awaitable<void> note_resolved(const request_context& rc, const cache_state& state,
                                      const oci::digest& d) {
    auto m = co_await cache_->manifest(d);
    if (m && content::accepts(state.accept_cls, m->media_type)) {
      co_await cache_->confirm(state.key, d);
      note_manifest(rc, d, m->media_type, m->bytes, true);
    } else if (!m) {
      cache_->expect(state.key, state.accept_cls, d);
      note_tag(rc, d);
    }
  }

  // The request named a tag that resolved to `d`: its profile will carry it.
  void note_tag(const request_context& rc, const oci::digest& d) {
    if (rc.gate != nullptr) rc.gate->learn(rc.choice.repository, d);
    if (oci::digest::parse(rc.r.reference)) return;
    observer_.tag_seen(d, rc.client.settings().name, rc.choice.repository, rc.r.reference);
  }

  // A manifest is being sent to a client (GET, 200; or HEAD, see manifest_served): recording
  // and prefetch start here.
  void note_manifest(const request_context& rc, const oci::digest& d, std::string_view media_type,
                     std::string_view body, bool head) {
    const auto m = oci::parse_manifest(body, media_type);
    if (m && rc.gate != nullptr) rc.gate->learn(rc.choice.repository, *m);
    if (!m || m->is_index()) return;
    if (!head) blobs_.listed(rc.client, m->blobs());
    note_tag(rc, d);
    observer_.manifest_served(
        rc.executor, rc.client, rc.choice.repository, d, media_type, *m, body.size(),
        head ? access_observer::trigger::head : access_observer::trigger::get);
  }

  content::manifest_cache* cache_;  // null: straight through
  const config::config& cfg_;
  access_observer& observer_;
  blob_handler& blobs_;
  metrics::registry& metrics_;
};

}  // namespace

std::unique_ptr<manifest_handler> cached_manifests(content::manifest_cache& cache,
                                                   const config::config& cfg,
                                                   access_observer& observer, blob_handler& blobs,
                                                   metrics::registry& metrics) {
  return std::make_unique<manifests>(&cache, cfg, observer, blobs, metrics);
}

std::unique_ptr<manifest_handler> relayed_manifests(const config::config& cfg,
                                                    access_observer& observer, blob_handler& blobs,
                                                    metrics::registry& metrics) {
  return std::make_unique<manifests>(nullptr, cfg, observer, blobs, metrics);
}

}  // namespace layercache::server
