#include "server/preload.hpp"

#include <set>

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

// The manifest `reference` (tag or digest) of `repository`: by digest from the store when it
// holds it, else from the upstream and stored in the manifest cache (a tag also gets its
// record). Returns an error text (and status) on failure.
asio::awaitable<std::variant<fetched_manifest, std::pair<unsigned, std::string>>> fetch_manifest(
    const preload_services& with, registry::upstream_client& client, const std::string& repository,
    const std::string& reference) {
  using failure = std::pair<unsigned, std::string>;
  const auto requested = oci::digest::parse(reference);
  if (requested) {
    auto stored = co_await with.manifests.manifest(*requested);
    if (stored) {
      co_return fetched_manifest{*requested, std::move(stored->media_type),
                                 std::move(stored->bytes)};
    }
  }
  const std::string accept(oci::default_manifest_accept());
  auto result = co_await registry::get_manifest(client, repository, reference, accept,
                                                with.cfg.server.max_manifest_size);
  const std::string at = "upstream " + client.settings().name + ": " + repository +
                         (requested ? "@" : ":") + reference;
  if (auto* f = std::get_if<registry::manifest_failure>(&result)) {
    if (f->kind == registry::manifest_failure::why::digest_mismatch) {
      with.metrics.digest_failure("manifest");
    }
    const unsigned status =
        f->kind == registry::manifest_failure::why::upstream ? f->failure.http_status() : 502u;
    co_return failure{status, at + ": " + f->failure.message};
  }
  if (auto* up = std::get_if<std::unique_ptr<registry::upstream_response>>(&result)) {
    const unsigned code = (*up)->status();
    if (code == 404) co_return failure{404u, at + ": no such manifest (the upstream answered 404)"};
    co_return failure{502u, at + ": the upstream answered " + std::to_string(code)};
  }
  auto& m = std::get<registry::manifest_body>(result);
  if (m.status != 200) {
    co_return failure{502u, at + ": the upstream answered " + std::to_string(m.status)};
  }
  std::string key;
  if (!requested) {
    key = content::tag_key(client.settings().name, repository, reference,
                           content::accept_class(accept));
  }
  co_await with.manifests.put(m.digest, m.media_type, m.bytes, key);
  co_return fetched_manifest{m.digest, std::move(m.media_type), std::move(m.bytes)};
}

// The blobs `images` list, each once, in order (config, then layers), with their sizes.
std::vector<oci::descriptor> listed_blobs(const std::vector<resolved_manifest>& images) {
  std::vector<oci::descriptor> out;
  std::set<std::string> seen;
  const auto add = [&](const oci::descriptor& d) {
    if (seen.insert(d.digest.str()).second) out.push_back(d);
  };
  for (const auto& image : images) {
    if (image.parsed.config) add(*image.parsed.config);
    for (const auto& layer : image.parsed.layers) add(layer);
  }
  return out;
}

// Reads every blob of `blobs` whole through the cache, verified; r.ok when all were.
asio::awaitable<preload_result> read_whole(const preload_services& with,
                                           registry::upstream_client& client,
                                           const std::string& repository, preload_result r,
                                           const std::vector<oci::descriptor>& blobs,
                                           preload_progress& progress) {
  auto& cache = with.blobs;
  for (const auto& listed : blobs) {
    const oci::digest& d = listed.digest;
    if (with.stop != nullptr && *with.stop) {
      co_return failed(r, 503, "layercached is shutting down; the preload stopped");
    }
    auto described = co_await cache.describe(client, repository, d);
    if (auto* f = std::get_if<registry::upstream_failure>(&described)) {
      co_return failed(r, f->http_status(), "blob " + d.str() + ": " + f->message);
    }
    if (auto* up = std::get_if<std::unique_ptr<registry::upstream_response>>(&described)) {
      co_return failed(
          r, 502, "blob " + d.str() + ": upstream answered " + std::to_string((*up)->status()));
    }
    const auto meta = std::get<content::described_blob>(described);
    // The listed size was a guess: the progress counts the blob as it is.
    progress.bytes_total = progress.bytes_total - listed.size + meta.size;
    if (meta.size != 0 && !meta.verified) {
      const std::uint64_t before = progress.bytes;
      content::read_report report;
      const content::blob_source::sink counted =
          [&progress](const char*, std::size_t n) -> asio::awaitable<bool> {
        progress.bytes += n;
        co_return true;
      };
      const auto result = co_await cache.read_whole(client, repository, d, meta, counted, &report);
      r.fetched_bytes += report.filled_bytes + report.joined_bytes;
      if (result == content::blob_source::verified_read::failed) {
        co_return failed(r, 502, "blob " + d.str() + ": reading it failed");
      }
      if (result == content::blob_source::verified_read::mismatch) {
        with.metrics.digest_failure("stream");
        co_return failed(r, 502, "blob " + d.str() + " does not match its digest; purged");
      }
      progress.bytes = before;
    }
    ++r.blobs;
    r.bytes += meta.size;
    ++progress.blobs;
    progress.bytes += meta.size;
  }
  r.ok = true;
  co_return r;
}

// Begins the profile replay of each image manifest in `images` (with preload::start).
preload_result start_replays(const asio::any_io_executor& ex, const preload_services& with,
                             registry::upstream_client& client, const std::string& repository,
                             preload_result r, const std::vector<resolved_manifest>& images) {
  if (with.prefetch == nullptr) {
    return failed(r, 409, "prefetch is off (prefetch.enabled: false): nothing replays a start");
  }
  auto& prefetch = *with.prefetch;
  for (const auto& image : images) {
    if (prefetch.has_profile(image.digest)) ++r.profiles_held;
  }
  if (r.profiles_held == 0 && !prefetch.settings().fetch_published) {
    return failed(r, 404,
                  "no access profile is held for " + r.digest +
                      " (import one: layercachectl profile import; or set "
                      "prefetch.fetch_published)");
  }
  for (const auto& m : images) {
    prefetch.manifest_served(ex, client, repository, m.digest, m.media_type, m.parsed,
                             m.bytes.size(), access_observer::trigger::preload);
    ++r.replays;
  }
  r.ok = true;
  return r;
}

// The index entries of `index` that match `platform`, as references to fetch next.
std::vector<std::string> chosen_entries(const oci::manifest& index, const std::string& platform) {
  std::vector<std::string> out;
  for (const auto& entry : index.manifests) {
    if (platform_matches(platform, entry.platform_os.value_or(""),
                         entry.platform_architecture.value_or(""),
                         entry.platform_variant.value_or(""))) {
      out.push_back(entry.digest.str());
    }
  }
  return out;
}

// "linux/amd64, linux/arm64/v8": the platforms an index offers, for an error message.
std::string offered_platforms(const oci::manifest& index) {
  std::string out;
  for (const auto& entry : index.manifests) {
    std::string p =
        entry.platform_os.value_or("?") + "/" + entry.platform_architecture.value_or("?");
    if (entry.platform_variant) p += "/" + *entry.platform_variant;
    out += (out.empty() ? "" : ", ") + p;
  }
  return out;
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

asio::awaitable<resolved_image> resolve_image(const preload_services& with,
                                              const preload_request& req,
                                              preload_progress* progress) {
  resolved_image out;
  preload_result& r = out.failure;
  auto chosen = select_image_upstream(with.cfg, req.reference, req.upstream);
  if (auto* e = std::get_if<route_error>(&chosen)) {
    r = failed(r, e->status,
               e->status == 400 && e->code == "NAME_INVALID"
                   ? "not an image reference: " + req.reference
                   : e->message);
    co_return out;
  }
  const auto& choice = std::get<upstream_choice>(chosen);
  const auto ref = oci::reference::parse(req.reference);  // valid: select_image_upstream said
  r.upstream = choice.upstream->name;
  r.repository = choice.repository;
  registry::upstream_client& client = *with.clients.find(choice.upstream->name)->second;
  out.client = &client;

  // Manifests to expand, depth first: the reference, then the index's chosen entries.
  std::vector<std::pair<std::string, unsigned>> pending;
  pending.emplace_back(ref->digest ? ref->digest->str() : ref->tag, 0);
  std::vector<resolved_manifest> images;
  while (!pending.empty()) {
    auto [reference, depth] = std::move(pending.back());
    pending.pop_back();
    auto got = co_await fetch_manifest(with, client, r.repository, reference);
    if (auto* f = std::get_if<std::pair<unsigned, std::string>>(&got)) {
      r = failed(r, f->first, f->second);
      co_return out;
    }
    auto& m = std::get<fetched_manifest>(got);
    if (r.digest.empty()) r.digest = m.digest.str();
    ++r.manifests;
    if (progress != nullptr) ++progress->manifests;
    auto parsed = oci::parse_manifest(m.bytes, m.media_type);
    if (!parsed) {
      r = failed(r, 502, "manifest " + m.digest.str() + " cannot be parsed");
      co_return out;
    }
    if (!parsed->is_index()) {
      images.push_back(resolved_manifest{m.digest, std::move(m.media_type), std::move(m.bytes),
                                         std::move(*parsed)});
      continue;
    }
    if (depth >= max_index_depth) {
      r = failed(r, 502, "indexes nested too deeply");
      co_return out;
    }
    const auto entries = chosen_entries(*parsed, req.platform);
    if (entries.empty()) {
      r = failed(r, 404,
                 "the index " + m.digest.str() + " has no manifest for platform " + req.platform +
                     " (it has " + offered_platforms(*parsed) + ")");
      co_return out;
    }
    for (const auto& e : entries) pending.emplace_back(e, depth + 1);
  }
  r.ok = true;
  out.images = std::move(images);
  co_return out;
}

asio::awaitable<preload_result> preload(const preload_services& with, preload_request req,
                                        preload_progress* progress) {
  preload_progress own;
  preload_progress& p = progress != nullptr ? *progress : own;
  auto resolved = co_await resolve_image(with, req, &p);
  preload_result r = std::move(resolved.failure);
  if (!r.ok) co_return r;
  registry::upstream_client& client = *resolved.client;
  const std::string repository = r.repository;
  if (req.start) {
    const auto ex = co_await asio::this_coro::executor;
    r = start_replays(ex, with, client, repository, std::move(r), resolved.images);
    if (!r.ok) co_return r;
    log::info("admin", "preloading the start of ", req.reference, " (", r.digest, "): ", r.replays,
              " replays begun, ", r.profiles_held, " with a profile held");
    co_return r;
  }
  const auto blobs = listed_blobs(resolved.images);
  p.blobs_total = blobs.size();
  for (const auto& b : blobs) p.bytes_total += b.size;
  p.listed = true;
  r = co_await read_whole(with, client, repository, std::move(r), blobs, p);
  if (!r.ok) co_return r;
  log::info("admin", "preloaded ", req.reference, " (", r.digest, ") from ", r.upstream, ": ",
            r.manifests, " manifests, ", r.blobs, " blobs, ", r.bytes, " bytes, ", r.fetched_bytes,
            " from upstream");
  co_return r;
}

}  // namespace layercache::server
