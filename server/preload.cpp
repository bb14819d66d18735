#include "server/preload.hpp"

#include "content/blob_source.hpp"
#include "content/manifest_cache.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "oci/manifest.hpp"
#include "oci/media_types.hpp"
#include "oci/reference.hpp"
#include "registry/distribution.hpp"
#include "server/prefetch.hpp"
#include "server/upstream_select.hpp"

namespace layercache::server {
namespace {

constexpr unsigned max_index_depth = 2;

preload_result failed(preload_result r, unsigned status, std::string why) {
  r.ok = false;
  r.status = status;
  r.error = std::move(why);
  return r;
}

struct fetched_manifest {
  oci::digest digest;
  std::string media_type;
  std::string bytes;
};

// The manifest `reference` (tag or digest) of `repository`, stored in the manifest cache (a
// tag also gets its record). Returns an error text (and status) on failure.
asio::awaitable<std::variant<fetched_manifest, std::pair<unsigned, std::string>>> fetch_manifest(
    const preload_services& with, registry::upstream_client& client, const std::string& repository,
    const std::string& reference) {
  using failure = std::pair<unsigned, std::string>;
  const std::string accept(oci::default_manifest_accept());
  auto result = co_await registry::get_manifest(client, repository, reference, accept,
                                                with.cfg.server.max_manifest_size);
  if (auto* f = std::get_if<registry::manifest_failure>(&result)) {
    if (f->kind == registry::manifest_failure::why::digest_mismatch) {
      with.metrics.digest_failure("manifest");
    }
    const unsigned status =
        f->kind == registry::manifest_failure::why::upstream ? f->failure.http_status() : 502u;
    co_return failure{status, "upstream " + client.settings().name + ": " + f->failure.message};
  }
  if (auto* up = std::get_if<std::unique_ptr<registry::upstream_response>>(&result)) {
    const unsigned status = (*up)->status() == 404 ? 404u : 502u;
    co_return failure{status, "upstream " + client.settings().name + " answered " +
                                  std::to_string((*up)->status()) + " for manifest " + reference};
  }
  auto& m = std::get<registry::manifest_body>(result);
  if (m.status != 200) {
    co_return failure{502u, "upstream " + client.settings().name + " answered " +
                                std::to_string(m.status) + " for manifest " + reference};
  }
  const auto requested = oci::digest::parse(reference);
  std::string key;
  if (!requested) {
    key = content::tag_key(client.settings().name, repository, reference,
                           content::accept_class(accept));
  }
  co_await with.manifests.put(m.digest, m.media_type, m.bytes, key);
  co_return fetched_manifest{m.digest, std::move(m.media_type), std::move(m.bytes)};
}

// Reads every blob of `blobs` whole through the cache, verified; r.ok when all were.
asio::awaitable<preload_result> read_whole(const preload_services& with,
                                           registry::upstream_client& client,
                                           const std::string& repository, preload_result r,
                                           const std::vector<oci::digest>& blobs) {
  auto& cache = with.blobs;
  for (const auto& d : blobs) {
    auto described = co_await cache.describe(client, repository, d);
    if (auto* f = std::get_if<registry::upstream_failure>(&described)) {
      co_return failed(r, f->http_status(), "blob " + d.str() + ": " + f->message);
    }
    if (auto* up = std::get_if<std::unique_ptr<registry::upstream_response>>(&described)) {
      co_return failed(
          r, 502, "blob " + d.str() + ": upstream answered " + std::to_string((*up)->status()));
    }
    const auto meta = std::get<content::described_blob>(described);
    ++r.blobs;
    if (meta.size == 0 || meta.verified) {
      r.bytes += meta.size;
      continue;
    }
    content::read_report report;
    const auto result = co_await cache.read_verified(client, repository, d, meta, &report);
    r.fetched_bytes += report.filled_bytes + report.joined_bytes;
    if (result == content::blob_source::verified_read::failed) {
      co_return failed(r, 502, "blob " + d.str() + ": reading it failed");
    }
    if (result == content::blob_source::verified_read::mismatch) {
      with.metrics.digest_failure("stream");
      co_return failed(r, 502, "blob " + d.str() + " does not match its digest; purged");
    }
    r.bytes += meta.size;
  }
  r.ok = true;
  co_return r;
}

// An image manifest a start preload replays: as fetched, and as parsed once.
struct start_image {
  fetched_manifest fetched;
  oci::manifest parsed;
};

// Begins the profile replay of each image manifest in `images` (with preload::start).
preload_result start_replays(const asio::any_io_executor& ex, const preload_services& with,
                             registry::upstream_client& client, const std::string& repository,
                             preload_result r, const std::vector<start_image>& images) {
  if (with.prefetch == nullptr) {
    return failed(r, 409, "prefetch is off (prefetch.enabled: false): nothing replays a start");
  }
  auto& prefetch = *with.prefetch;
  for (const auto& image : images) {
    if (prefetch.has_profile(image.fetched.digest)) ++r.profiles_held;
  }
  if (r.profiles_held == 0 && !prefetch.settings().fetch_published) {
    return failed(r, 404,
                  "no access profile is held for " + r.digest +
                      " (import one: layercachectl profile import; or set "
                      "prefetch.fetch_published)");
  }
  for (const auto& [m, parsed] : images) {
    prefetch.manifest_served(ex, client, repository, m.digest, m.media_type, parsed, m.bytes.size(),
                             access_observer::trigger::preload);
    ++r.replays;
  }
  r.ok = true;
  return r;
}

}  // namespace

bool platform_matches(std::string_view platform, const std::string& os,
                      const std::string& architecture, const std::string& variant) {
  if (platform == "all") return true;
  std::string want_os, want_arch, want_variant;
  const auto a = platform.find('/');
  if (a == std::string_view::npos) return false;
  want_os = platform.substr(0, a);
  const auto b = platform.find('/', a + 1);
  want_arch =
      platform.substr(a + 1, b == std::string_view::npos ? std::string_view::npos : b - a - 1);
  if (b != std::string_view::npos) want_variant = platform.substr(b + 1);
  if (want_os != os || want_arch != architecture) return false;
  return want_variant.empty() || want_variant == variant;
}

asio::awaitable<preload_result> preload(const preload_services& with, preload_request req) {
  preload_result r;
  const auto ref = oci::reference::parse(req.reference);
  if (!ref) co_return failed(r, 400, "not an image reference: " + req.reference);
  std::optional<std::string> ns;
  if (req.upstream.empty()) {
    ns = ref->registry;
  } else {
    ns = req.upstream;
  }
  auto chosen = select_upstream(with.cfg, ref->repository, ns);
  if (auto* e = std::get_if<route_error>(&chosen)) {
    co_return failed(r, e->status, "no configured upstream for " + *ns + ": " + e->message);
  }
  const auto& choice = std::get<upstream_choice>(chosen);
  r.upstream = choice.upstream->name;
  registry::upstream_client& client = *with.clients.find(choice.upstream->name)->second;
  const std::string& repository = choice.repository;

  // Manifests to expand, breadth first: the reference, then the index's chosen entries.
  std::vector<std::pair<std::string, unsigned>> pending;
  pending.emplace_back(ref->digest ? ref->digest->str() : ref->tag, 0);
  std::vector<oci::digest> blobs;
  std::vector<start_image> images;  // with req.start
  while (!pending.empty()) {
    auto [reference, depth] = std::move(pending.back());
    pending.pop_back();
    auto got = co_await fetch_manifest(with, client, repository, reference);
    if (auto* f = std::get_if<std::pair<unsigned, std::string>>(&got)) {
      co_return failed(r, f->first, f->second);
    }
    auto& m = std::get<fetched_manifest>(got);
    if (r.digest.empty()) r.digest = m.digest.str();
    ++r.manifests;
    const auto parsed = oci::parse_manifest(m.bytes, m.media_type);
    if (!parsed) co_return failed(r, 502, "manifest " + m.digest.str() + " cannot be parsed");
    if (parsed->is_index()) {
      if (depth >= max_index_depth) co_return failed(r, 502, "indexes nested too deeply");
      std::size_t chosen_count = 0;
      for (const auto& entry : parsed->manifests) {
        if (platform_matches(req.platform, entry.platform_os.value_or(""),
                             entry.platform_architecture.value_or(""),
                             entry.platform_variant.value_or(""))) {
          pending.emplace_back(entry.digest.str(), depth + 1);
          ++chosen_count;
        }
      }
      if (chosen_count == 0) {
        co_return failed(
            r, 404,
            "the index " + m.digest.str() + " has no manifest for platform " + req.platform);
      }
      continue;
    }
    if (parsed->config) blobs.push_back(parsed->config->digest);
    for (const auto& layer : parsed->layers) blobs.push_back(layer.digest);
    if (req.start) images.push_back(start_image{std::move(m), *parsed});
  }

  if (req.start) {
    r = start_replays(co_await asio::this_coro::executor, with, client, repository, std::move(r),
                      images);
    if (!r.ok) co_return r;
  } else {
    r = co_await read_whole(with, client, repository, std::move(r), blobs);
    if (!r.ok) co_return r;
  }
  r.ok = true;
  if (req.start) {
    log::info("admin", "preloading the start of ", req.reference, " (", r.digest, "): ", r.replays,
              " replays begun, ", r.profiles_held, " with a profile held");
    co_return r;
  }
  log::info("admin", "preloaded ", req.reference, " (", r.digest, "): ", r.manifests,
            " manifests, ", r.blobs, " blobs, ", r.bytes, " bytes, ", r.fetched_bytes,
            " from upstream");
  co_return r;
}

}  // namespace layercache::server
