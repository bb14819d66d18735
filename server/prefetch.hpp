// Access profiles and prefetch (docs/architecture.md "Prefetch"). Include only from
// server/*.cpp.
//
// Recording: serving an image manifest to a client opens a recording window (prefetch.window)
// for it; the byte ranges clients read of the blobs it lists, in first-touch order and with
// their time since the window opened, form a *run*. When the window closes the run is merged
// into the manifest's profile (cache/profile.hpp), which is kept in the store.
//
// Replay: serving a manifest that has a profile fetches the profile's chunks in profile order
// with prefetch.concurrency fills in flight; with no profile (or eager_layers: always) every
// blob the manifest lists is fetched whole. Prefetch fills are ordinary content::blob_source fills:
// a client read joins one instead of fetching again, and never waits behind the prefetch
// queue (demand reads start their own fills at once).
//
// Thread-safety: one prefetcher serves all workers; every method may be called from any
// worker. A replay runs on the worker that served the manifest, with that worker's upstream
// client.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "asio/names.hpp"
#include "asio/offload.hpp"
#include "cache/chunk_store.hpp"
#include "cache/profile.hpp"
#include "config/config.hpp"
#include "oci/digest.hpp"
#include "oci/manifest.hpp"
#include "oci/range.hpp"
#include "registry/upstream_client.hpp"
#include "server/services.hpp"

namespace layercache::content {
class blob_source;
}  // namespace layercache::content

namespace layercache::server {

struct prefetch_stats {
  std::uint64_t runs_recorded = 0;    // runs merged into profiles
  std::uint64_t profile_replays = 0;  // manifests whose profile was replayed
  std::uint64_t eager_replays = 0;    // manifests whose blobs were fetched whole
  std::uint64_t jobs_failed = 0;
  std::uint64_t queued = 0;     // jobs waiting, across all replays
  std::uint64_t profiles = 0;   // profiles in the store (filled by stats())
  std::uint64_t published = 0;  // profiles pushed to an upstream registry
  std::uint64_t publish_failures = 0;
  std::uint64_t found_published = 0;  // profiles found in an upstream registry and imported
};

// A profile just written, with what publishing it needs.
struct saved_profile {
  oci::digest manifest;
  std::string upstream;    // configured name
  std::string repository;  // at the upstream
  std::string media_type;  // of the manifest
  std::uint64_t size = 0;  // of the manifest
  std::string json;        // the profile document
};

class prefetcher final : public access_observer {
 public:
  using clock = std::chrono::steady_clock;

  prefetcher(cache::chunk_store& store, content::blob_source& blobs, blocking_pool& pool,
             config::prefetch_settings settings);
  ~prefetcher() override;
  prefetcher(const prefetcher&) = delete;
  prefetcher& operator=(const prefetcher&) = delete;

  // Reads which blobs the stored profiles name (for eviction: see hot_ranges()). Blocking; call
  // once before serving.
  void load();

  // Image manifest `digest` (`m` parsed from its `body_size` bytes) of `repository` through
  // `client` was served (or preloaded, see trigger): opens its recording window (at once, for
  // a GET) and starts its replay on `ex` (the worker `client` belongs to). The session passes
  // only image manifests (the platform manifest a client pulls after an index is the one
  // recorded).
  void manifest_served(const asio::any_io_executor& ex, registry::upstream_client& client,
                       const std::string& repository, const oci::digest& digest,
                       std::string_view media_type, const oci::manifest& m, std::size_t body_size,
                       trigger why) override;
  // True when a profile of `manifest` is held (imported, recorded or found published).
  [[nodiscard]] bool has_profile(const oci::digest& manifest) const;

  // A client's request for tag `tag` of `repository` at `upstream` resolved to manifest
  // `manifest`: the tag goes into the manifest's profile when its next run is saved.
  void tag_seen(const oci::digest& manifest, const std::string& upstream,
                const std::string& repository, const std::string& tag) override;

  // A client read `bytes` of blob `blob` (an empty interval is no read).
  void touched(const oci::digest& blob, oci::byte_interval bytes) override;

  // Merges the runs of windows that have closed (every window with `all`) into their
  // profiles; returns the profiles written. save_closed runs the store I/O on the blocking
  // pool; save_closed_now blocks the caller (shutdown).
  asio::awaitable<std::vector<saved_profile>> save_closed(bool all);
  std::size_t save_closed_now(bool all);
  // Counts the outcome of publishing a profile (registry::push_artifact).
  void count_publish(bool ok);

  // Replays stop after the job they are on; no new ones start.
  void stop();

  // The byte ranges stored profiles name in `blob` (empty: none): eviction takes such blobs
  // last, their other chunks first. Called by the store with its lock held (an eviction query,
  // cache/chunk_store.hpp): takes only mutex_, and nothing here calls the store holding it.
  [[nodiscard]] cache::chunk_store::byte_ranges hot_ranges(const oci::digest& blob) const;

  // Profiles through the admin API (blocking store I/O: call from the blocking pool). An
  // export carries the manifest when it is stored (manifest_media_type, manifest_bytes).
  [[nodiscard]] std::optional<std::string> export_profile(const oci::digest& manifest);
  // Validates and stores `json` as the profile of `manifest` (replacing any), and the manifest
  // it carries, if any (its bytes must hash to `manifest`); false with `error` when it is not
  // a profile of that manifest. Each of its tags whose record is missing gets a *hint* record
  // naming `manifest`, never fresh (the tag is resolved upstream as usual), from which the
  // replay starts while the runtime's first request for the tag is being resolved.
  bool import_profile(const oci::digest& manifest, std::string_view json, std::string& error);
  bool erase_profile(const oci::digest& manifest);
  // {"profiles":[{"manifest":…,"runs":N,"entries":N,"bytes":N},…]}
  [[nodiscard]] std::string list_profiles_json();

  [[nodiscard]] prefetch_stats stats() const;
  [[nodiscard]] const config::prefetch_settings& settings() const { return settings_; }

 private:
  struct window {
    oci::digest manifest;
    std::string upstream;
    std::string repository;
    std::string media_type;
    std::uint64_t size = 0;
    clock::time_point opened;
    clock::time_point deadline;
    clock::time_point last_touch;    // of the last read recorded (with touches)
    std::vector<std::string> blobs;  // digests the manifest lists
    std::vector<cache::touch> touches;
    std::unordered_map<std::string, std::size_t> seen;  // "digest#begin" → index in touches
  };
  struct replay;
  struct job;

  // When `w` stops recording: its deadline, or settings_.quiet after its last read.
  [[nodiscard]] clock::time_point closes(const window& w) const;
  // Stores the manifest an exported profile carries; true when it carries none.
  bool store_carried_manifest(const oci::digest& manifest, std::string_view json,
                              std::string& error);
  // Moves windows whose deadline passed (all with `all`) out of the open set.
  std::vector<window> take_closed(bool all);
  std::vector<saved_profile> save(const std::vector<window>& closed);
  void note_profile(const cache::profile& p);
  // The hint records of `p`'s tags (import_profile).
  void write_tag_hints(const cache::profile& p);
  void forget_profile(const oci::digest& manifest);
  // Drops `manifest`'s byte ranges from hot_ (its profile_blobs_ entry is left empty).
  void unhot_locked(const std::string& manifest);
  bool recently_not_published(const std::string& manifest);
  // A replay: the profile to follow, the jobs it makes (or every blob, eager), the workers.
  asio::awaitable<void> run_replay(std::shared_ptr<replay> r);
  // The stored profile of `manifest`, if one is held.
  asio::awaitable<std::optional<cache::profile>> stored_profile(const replay& r,
                                                                const oci::digest& manifest);
  // The profile published next to `manifest` in its upstream registry, imported; remembers
  // a manifest without one (recently_not_published).
  asio::awaitable<std::optional<cache::profile>> published_profile(const replay& r,
                                                                   const oci::digest& manifest);
  // Jobs of the chunks `prof` names that the store lacks, in profile order (adjacent chunks
  // of a blob join one job, up to max_job_chunks).
  void plan_profile_jobs(replay& r, const cache::profile& prof);
  // One whole-blob job per listed blob not yet verified (eager layers).
  void plan_eager_jobs(replay& r);
  // Counts the replay in stats_, sizes its batches; returns how many workers it gets.
  unsigned prepare_workers(replay& r, bool profiled, bool eager);
  asio::awaitable<void> replay_worker(std::shared_ptr<replay> r);

  cache::chunk_store& store_;
  content::blob_source& blobs_;
  blocking_pool& pool_;
  const config::prefetch_settings settings_;
  std::atomic<bool> stopped_{false};

  // Taken inside the store's lock by hot_ranges(): never call the store while holding it.
  mutable std::mutex mutex_;
  std::map<std::string, window> windows_;  // open, by manifest digest
  std::vector<window> closed_;             // closed while being reopened, not yet saved
  // Blob digest -> manifests whose open window lists it.
  std::unordered_map<std::string, std::vector<std::string>> window_blobs_;
  std::unordered_set<std::string> replaying_;  // manifests with a replay running
  // Manifest digest -> the last tag a client resolved to it (at most max_seen_tags).
  std::unordered_map<std::string, cache::profile_tag> seen_tags_;
  // Manifests recently looked for in their upstream registry without success.
  std::unordered_map<std::string, clock::time_point> not_published_;
  // Blob digest -> (manifest -> byte ranges its profile names in the blob).
  std::unordered_map<std::string, std::map<std::string, cache::chunk_store::byte_ranges>> hot_;
  std::unordered_map<std::string, std::vector<std::string>> profile_blobs_;  // by manifest
  prefetch_stats stats_;
};

}  // namespace layercache::server
