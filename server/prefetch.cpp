#include "server/prefetch.hpp"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/json.hpp>

#include "content/blob_source.hpp"
#include "content/manifest_cache.hpp"
#include "log/log.hpp"
#include "oci/manifest.hpp"
#include "oci/reference.hpp"
#include "registry/artifacts.hpp"
#include "server/published_profile.hpp"

namespace layercache::server {
namespace {

// A job covers at most this many chunks, so that other replays' jobs interleave.
constexpr std::uint32_t max_job_chunks = 64;
// A worker takes, with its job, later jobs of the same blob (among the next batch_lookahead
// not yet taken) up to the replay's batch size: one multi-range request instead of one round
// trip each (docs/benchmarks.md, lazy start). The batch size spreads the replay's bytes over
// its workers (one round of requests where it can), at most max_batch_bytes: a transfer
// per connection is slower than several in parallel.
constexpr std::uint64_t max_batch_bytes = 4ULL << 20;
constexpr std::size_t batch_lookahead = 64;
// Recording windows open at once (each holds at most max_profile_entries touches).
constexpr std::size_t max_open_windows = 1024;
// A replay gives up after this many failed jobs (the upstream is in trouble).
constexpr unsigned max_replay_failures = 3;
// Largest profile document read from a registry.
constexpr std::size_t max_published_profile = std::size_t{16} * 1024 * 1024;
// A manifest found without a published profile is not asked about again for this long.
constexpr auto not_published_ttl = std::chrono::minutes(10);
constexpr std::size_t max_not_published = 4096;
// Manifests whose last resolved tag is remembered (tag_seen); cleared when full.
constexpr std::size_t max_seen_tags = 4096;

// The index of `blob` among the blobs a manifest lists.
std::optional<std::size_t> listed_index(const std::vector<oci::descriptor>& listed,
                                        const oci::digest& blob) {
  for (std::size_t i = 0; i < listed.size(); ++i) {
    if (listed[i].digest == blob) return i;
  }
  return std::nullopt;
}

// A blob a replay may fetch chunks of: not verified whole, with a known size and chunk size.
bool fetchable(const content::listed_blob& b) {
  const auto& meta = b.meta;
  return !meta.verified && meta.size > 0 && meta.chunk_size > 0;
}

}  // namespace

struct prefetcher::job {
  std::size_t blob = 0;  // index in the replay's listed / blobs
  std::uint32_t first = 0;
  std::uint32_t last = 0;
};

struct prefetcher::replay {
  registry::upstream_client* client = nullptr;
  // `client` when it is shared (acting with one client's credentials): held while the replay runs.
  std::shared_ptr<registry::upstream_client> keep;
  std::string repository;
  std::string manifest;
  std::vector<oci::descriptor> listed;      // the blobs the manifest lists
  std::vector<content::listed_blob> blobs;  // what the store holds of each
  std::vector<job> jobs;
  std::vector<bool> taken;        // jobs a worker took (in order from `next`, or into a batch)
  std::uint64_t batch_bytes = 0;  // largest batch a worker makes
  trigger why = trigger::get;
  std::size_t next = 0;  // first job not taken; only touched on the replay's executor
  std::size_t left = 0;  // jobs not taken
  unsigned workers = 0;
  unsigned failures = 0;
};

prefetcher::prefetcher(cache::chunk_store& store, content::blob_source& blobs, blocking_pool& pool,
                       config::prefetch_settings settings)
    : store_(store), blobs_(blobs), pool_(pool), settings_(std::move(settings)) {}

prefetcher::~prefetcher() = default;

void prefetcher::load() {
  for (const auto& d : store_.profiles()) {
    const auto text = store_.profile(d);
    if (!text) continue;
    if (auto p = cache::profile_from_json(*text)) {
      note_profile(*p);
    } else {
      log::warn("prefetch", "stored profile of ", d.str(), " is unreadable; ignored");
    }
  }
}

void prefetcher::manifest_served(const asio::any_io_executor& ex, registry::upstream_client& client,
                                 const std::string& repository, const oci::digest& digest,
                                 std::string_view media_type, const oci::manifest& m,
                                 std::size_t body_size, trigger why) {
  if (stopped_) return;
  const bool head = why == trigger::head;
  const bool record = why == trigger::get;
  std::vector<oci::descriptor> listed = m.blobs();
  const auto now = clock::now();
  const std::string& key = digest.str();
  {
    std::lock_guard lock(mutex_);
    if (head && !profile_blobs_.contains(key)) return;  // the GET that follows decides
    auto it = record ? windows_.find(key) : windows_.end();
    if (it != windows_.end() && closes(it->second) <= now) {
      // Closed but not yet saved: keep its run for the next save, open a new window.
      closed_.push_back(std::move(it->second));
      windows_.erase(it);
      it = windows_.end();
    }
    if (!record) {
      // A HEAD (containerd resolving a tag) records nothing: the GET that follows opens the
      // window. A preload is no start: nothing to record.
    } else if (it == windows_.end() && windows_.size() + closed_.size() >= max_open_windows) {
      // A flood of distinct manifests: record none of them rather than grow without bound.
      log::debug("prefetch", "too many recording windows open; not recording ", key);
    } else if (it == windows_.end()) {
      window w{digest,
               client.settings().name,
               repository,
               std::string(media_type),
               body_size,
               now,
               now + settings_.window,
               {},
               {},
               {},
               {}};
      for (const auto& d : listed) {
        w.blobs.push_back(d.digest.str());
        window_blobs_[d.digest.str()].push_back(key);
      }
      windows_.emplace(key, std::move(w));
    }
    if (!replaying_.insert(key).second) return;
  }
  auto r = std::make_shared<replay>();
  r->client = &client;
  r->keep = client.weak_from_this().lock();
  r->repository = repository;
  r->manifest = key;
  r->why = why;
  r->listed = std::move(listed);
  asio::co_spawn(ex, run_replay(std::move(r)), asio::detached);
}

bool prefetcher::has_profile(const oci::digest& manifest) const {
  std::lock_guard lock(mutex_);
  return profile_blobs_.contains(manifest.str());
}

asio::awaitable<void> prefetcher::run_replay(std::shared_ptr<replay> r) {
  // NOLINTNEXTLINE(cppcoreguidelines-special-member-functions): a scope guard, never copied
  struct done_guard {
    prefetcher& p;
    std::shared_ptr<replay>& r;
    bool armed = true;
    ~done_guard() {
      if (!armed) return;
      std::lock_guard lock(p.mutex_);
      p.replaying_.erase(r->manifest);
    }
  } guard{*this, r};

  const auto manifest = *oci::digest::parse(r->manifest);
  std::optional<cache::profile> prof = co_await stored_profile(*r, manifest);
  if (!prof && r->why != trigger::head && settings_.fetch_published &&
      !recently_not_published(r->manifest)) {
    // None of our own: the upstream registry may have one next to the image.
    prof = co_await published_profile(*r, manifest);
  }

  // What the store already holds of each listed blob, in one trip.
  r->blobs = co_await blobs_.describe_listed(r->listed);
  if (prof) plan_profile_jobs(*r, *prof);
  const bool eager = r->why == trigger::get &&
                     (settings_.eager_layers == config::eager_mode::always ||
                      (settings_.eager_layers == config::eager_mode::automatic && !prof));
  if (eager) plan_eager_jobs(*r);
  if (r->jobs.empty() || stopped_) co_return;

  const unsigned workers = prepare_workers(*r, prof.has_value(), eager);
  guard.armed = false;  // the last worker clears replaying_
  auto ex = co_await asio::this_coro::executor;
  for (unsigned w = 0; w < workers; ++w) asio::co_spawn(ex, replay_worker(r), asio::detached);
}

asio::awaitable<std::optional<cache::profile>> prefetcher::stored_profile(
    const replay& r, const oci::digest& manifest) {
  std::optional<cache::profile> prof;
  bool known = false;  // every stored profile is in profile_blobs_: no store read without one
  {
    std::lock_guard lock(mutex_);
    known = profile_blobs_.contains(r.manifest);
  }
  if (known) {
    auto text = co_await pool_.run([this, &manifest] { return store_.profile(manifest); });
    if (text) prof = cache::profile_from_json(*text);
  }
  if (prof && prof->manifest != manifest) prof.reset();
  co_return prof;
}

asio::awaitable<std::optional<cache::profile>> prefetcher::published_profile(
    const replay& r, const oci::digest& manifest) {
  std::optional<cache::profile> prof;
  const std::string type(profile_artifact_type);
  auto found = co_await registry::find_artifact(*r.client, r.repository, manifest, type,
                                                max_published_profile);
  if (found) {
    std::string error;
    auto* doc = &*found;
    const bool ok = co_await pool_.run(
        [this, &manifest, doc, &error] { return import_profile(manifest, *doc, error); });
    if (ok) {
      prof = cache::profile_from_json(*found);
      std::lock_guard lock(mutex_);
      ++stats_.found_published;
    } else {
      log::warn("prefetch", "profile published for ", r.manifest, " in ", r.client->settings().name,
                " is not usable: ", error);
    }
  }
  if (!prof) {
    std::lock_guard lock(mutex_);
    if (not_published_.size() >= max_not_published) not_published_.clear();
    not_published_[r.manifest] = clock::now();
  } else {
    log::info("prefetch", "using the profile published for ", r.manifest, " in ",
              r.client->settings().name);
  }
  co_return prof;
}

void prefetcher::plan_profile_jobs(replay& r, const cache::profile& prof) {
  std::vector<std::vector<bool>> queued(r.listed.size());
  for (const auto& e : prof.entries) {
    const auto i =
        listed_index(r.listed, e.blob);  // only blobs this manifest lists are ever fetched
    if (!i || !fetchable(r.blobs[*i])) continue;
    const auto& meta = r.blobs[*i].meta;
    const oci::byte_interval bytes = e.bytes.intersect({0, meta.size});
    if (bytes.empty()) continue;
    const auto first = static_cast<std::uint32_t>(bytes.begin / meta.chunk_size);
    const auto last = static_cast<std::uint32_t>((bytes.end - 1) / meta.chunk_size);
    auto& q = queued[*i];  // stored chunks count as queued: nothing to fetch
    if (q.empty()) {
      q = r.blobs[*i].present;
      q.resize((meta.size + meta.chunk_size - 1) / meta.chunk_size, false);
    }
    for (std::uint32_t c = first; c <= last; ++c) {
      if (q[c]) continue;
      q[c] = true;
      job* prev = r.jobs.empty() ? nullptr : &r.jobs.back();
      if (prev != nullptr && prev->blob == *i && prev->last + 1 == c &&
          prev->last - prev->first + 1 < max_job_chunks) {
        prev->last = c;
      } else {
        r.jobs.push_back(job{*i, c, c});
      }
    }
  }
}

void prefetcher::plan_eager_jobs(replay& r) {
  for (std::size_t i = 0; i < r.listed.size(); ++i) {
    if (!fetchable(r.blobs[i])) continue;
    const auto& meta = r.blobs[i].meta;
    const auto chunks =
        static_cast<std::uint32_t>((meta.size + meta.chunk_size - 1) / meta.chunk_size);
    // One job per blob: blobs arrive in parallel, each in order.
    r.jobs.push_back(job{i, 0, chunks - 1});
  }
}

unsigned prefetcher::prepare_workers(replay& r, bool profiled, bool eager) {
  const unsigned workers =
      static_cast<unsigned>(std::min<std::size_t>(settings_.concurrency, r.jobs.size()));
  {
    std::lock_guard lock(mutex_);
    (profiled ? stats_.profile_replays : stats_.eager_replays) += 1;
    stats_.queued += r.jobs.size();
  }
  log::debug("prefetch", "replaying ", r.jobs.size(), " jobs for ", r.manifest,
             profiled ? " from its profile" : "", eager ? " (eager layers)" : "", " with ", workers,
             " fills in flight");
  r.workers = workers;
  std::uint64_t total = 0;
  for (const auto& j : r.jobs) {
    total += std::uint64_t{j.last - j.first + 1} * r.blobs[j.blob].meta.chunk_size;
  }
  r.batch_bytes = std::min(max_batch_bytes, (total + workers - 1) / workers);
  r.taken.assign(r.jobs.size(), false);
  r.left = r.jobs.size();
  return workers;
}

asio::awaitable<void> prefetcher::replay_worker(std::shared_ptr<replay> r) {
  // NOLINTNEXTLINE(cppcoreguidelines-special-member-functions): a scope guard, never copied
  struct exit_guard {
    prefetcher& p;
    replay& r;
    ~exit_guard() {
      if (--r.workers > 0) return;
      std::lock_guard lock(p.mutex_);
      p.replaying_.erase(r.manifest);
      // Jobs never started (stopped, or given up).
      p.stats_.queued -= std::min<std::uint64_t>(p.stats_.queued, r.left);
      r.left = 0;
      r.next = r.jobs.size();
    }
  } guard{*this, *r};

  auto take = [this, &r](std::size_t k) {
    r->taken[k] = true;
    --r->left;
    while (r->next < r->jobs.size() && r->taken[r->next]) ++r->next;
    std::lock_guard lock(mutex_);
    if (stats_.queued > 0) --stats_.queued;
  };
  while (!stopped_ && r->next < r->jobs.size() && r->failures < max_replay_failures) {
    const job j = r->jobs[r->next];
    take(r->next);
    // Later jobs of the same blob join this one's request, up to the batch size.
    const std::uint64_t batch_bytes = r->batch_bytes;
    const std::uint64_t cs = r->blobs[j.blob].meta.chunk_size;
    std::vector<std::uint32_t> batch;
    std::uint64_t bytes = std::uint64_t{j.last - j.first + 1} * cs;
    if (bytes < batch_bytes && blobs_.multi_range(*r->client)) {
      for (std::uint32_t c = j.first; c <= j.last; ++c) batch.push_back(c);
      const std::size_t end = std::min(r->jobs.size(), r->next + batch_lookahead);
      for (std::size_t k = r->next; k < end && bytes < batch_bytes; ++k) {
        const job& o = r->jobs[k];
        if (r->taken[k] || o.blob != j.blob) continue;
        const std::uint64_t more = std::uint64_t{o.last - o.first + 1} * cs;
        if (bytes + more > batch_bytes) continue;
        for (std::uint32_t c = o.first; c <= o.last; ++c) batch.push_back(c);
        bytes += more;
        take(k);
      }
    }
    // (No conditional expression around co_await: g++ 12 miscompiles its temporaries.)
    bool ok = false;
    if (batch.size() > std::size_t{j.last} - j.first + 1) {
      ok = co_await blobs_.prefetch_batch(*r->client, r->repository, r->listed[j.blob].digest,
                                          r->blobs[j.blob], std::move(batch), &stopped_);
    } else {
      ok = co_await blobs_.prefetch(*r->client, r->repository, r->listed[j.blob].digest,
                                    r->blobs[j.blob], j.first, j.last, &stopped_);
    }
    if (!ok) {
      std::lock_guard lock(mutex_);
      ++stats_.jobs_failed;
      if (++r->failures == max_replay_failures) {
        log::warn("prefetch", "replay of ", r->manifest, " gave up after ", max_replay_failures,
                  " failed fetches");
      }
    }
  }
}

bool prefetcher::recently_not_published(const std::string& manifest) {
  std::lock_guard lock(mutex_);
  auto it = not_published_.find(manifest);
  return it != not_published_.end() && clock::now() - it->second < not_published_ttl;
}

void prefetcher::touched(const oci::digest& blob, oci::byte_interval bytes) {
  if (bytes.empty()) return;
  const auto now = clock::now();
  std::lock_guard lock(mutex_);
  auto it = window_blobs_.find(blob.str());
  if (it == window_blobs_.end()) return;
  for (const auto& m : it->second) {
    auto w = windows_.find(m);
    if (w == windows_.end() || now >= closes(w->second)) continue;
    auto& win = w->second;
    // A read at an offset already recorded keeps the first time and the longest length: the
    // stargz snapshotter probes each layer with `bytes=0-1` before the container reads the
    // layer's first file from offset 0 (that read was lost, and missed at every next start).
    const auto [seen, first] =
        win.seen.try_emplace(blob.str() + "#" + std::to_string(bytes.begin), win.touches.size());
    if (!first) {
      auto& t = win.touches[seen->second];
      t.bytes.end = std::max(t.bytes.end, bytes.end);  // both begin at the same offset
      win.last_touch = now;
      continue;
    }
    if (win.touches.size() >= cache::max_profile_entries) {
      win.seen.erase(seen);
      continue;
    }
    const auto at = std::chrono::duration_cast<std::chrono::milliseconds>(now - win.opened);
    win.touches.push_back(cache::touch{blob, bytes, static_cast<std::uint32_t>(at.count())});
    win.last_touch = now;
  }
}

prefetcher::clock::time_point prefetcher::closes(const window& w) const {
  if (settings_.quiet.count() == 0 || w.touches.empty()) return w.deadline;
  return std::min(w.deadline, w.last_touch + settings_.quiet);
}

std::vector<prefetcher::window> prefetcher::take_closed(bool all) {
  const auto now = clock::now();
  std::lock_guard lock(mutex_);
  std::vector<window> out = std::move(closed_);
  closed_.clear();
  for (auto it = windows_.begin(); it != windows_.end();) {
    if (!all && closes(it->second) > now) {
      ++it;
      continue;
    }
    out.push_back(std::move(it->second));
    it = windows_.erase(it);
  }
  for (const auto& w : out) {
    const std::string key = w.manifest.str();
    for (const auto& b : w.blobs) {
      auto wb = window_blobs_.find(b);
      if (wb == window_blobs_.end()) continue;
      std::erase(wb->second, key);
      if (wb->second.empty()) window_blobs_.erase(wb);
    }
  }
  return out;
}

std::vector<saved_profile> prefetcher::save(const std::vector<window>& closed) {
  std::vector<saved_profile> saved;
  for (const auto& w : closed) {
    if (w.touches.empty()) continue;  // a manifest no one read blobs of is not a start
    std::optional<cache::profile> base;
    if (auto text = store_.profile(w.manifest)) base = cache::profile_from_json(*text);
    auto merged = cache::merge_run(std::move(base), w.manifest, w.touches);
    {
      std::lock_guard lock(mutex_);
      if (auto it = seen_tags_.find(w.manifest.str()); it != seen_tags_.end()) {
        cache::add_tag(merged, it->second);
      }
    }
    std::string json = cache::to_json(merged);
    if (auto s = store_.put_profile(w.manifest, json); !s.ok()) {
      log::warn("prefetch", "saving the profile of ", w.manifest.str(), ": ", s.message);
      continue;
    }
    note_profile(merged);
    saved.push_back(
        saved_profile{w.manifest, w.upstream, w.repository, w.media_type, w.size, std::move(json)});
    log::info("prefetch", "recorded a run of ", w.touches.size(), " reads for ", w.manifest.str(),
              " (", merged.runs, " runs, ", merged.entries.size(), " entries)");
    std::lock_guard lock(mutex_);
    ++stats_.runs_recorded;
  }
  return saved;
}

asio::awaitable<std::vector<saved_profile>> prefetcher::save_closed(bool all) {
  std::vector<window> closed = take_closed(all);
  if (closed.empty()) co_return std::vector<saved_profile>{};
  // Captures stay trivially copyable: g++ 12 mishandles non-trivial temporaries in co_await.
  auto* c = &closed;
  co_return co_await pool_.run([this, c] { return save(*c); });
}

std::size_t prefetcher::save_closed_now(bool all) { return save(take_closed(all)).size(); }

void prefetcher::count_publish(bool ok) {
  std::lock_guard lock(mutex_);
  ++(ok ? stats_.published : stats_.publish_failures);
}

void prefetcher::stop() { stopped_ = true; }

void prefetcher::note_profile(const cache::profile& p) {
  // Blob → the byte ranges this profile names in it.
  std::map<std::string, cache::chunk_store::byte_ranges> ranges;
  for (const auto& e : p.entries) {
    if (e.bytes.empty()) continue;
    ranges[e.blob.str()].push_back(e.bytes);
  }
  const std::string manifest = p.manifest.str();
  std::lock_guard lock(mutex_);
  unhot_locked(manifest);
  auto& current = profile_blobs_[manifest];
  for (auto& [b, r] : ranges) {
    current.push_back(b);
    hot_[b][manifest] = std::move(r);
  }
}

void prefetcher::forget_profile(const oci::digest& manifest) {
  const std::string& key = manifest.str();
  std::lock_guard lock(mutex_);
  unhot_locked(key);
  profile_blobs_.erase(key);
}

void prefetcher::unhot_locked(const std::string& manifest) {
  auto it = profile_blobs_.find(manifest);
  if (it == profile_blobs_.end()) return;
  for (const auto& b : it->second) {
    if (auto h = hot_.find(b); h != hot_.end()) {
      h->second.erase(manifest);
      if (h->second.empty()) hot_.erase(h);
    }
  }
  it->second.clear();
}

cache::chunk_store::byte_ranges prefetcher::hot_ranges(const oci::digest& blob) const {
  cache::chunk_store::byte_ranges out;
  std::lock_guard lock(mutex_);
  auto it = hot_.find(blob.str());
  if (it == hot_.end()) return out;
  for (const auto& [manifest, ranges] : it->second)
    out.insert(out.end(), ranges.begin(), ranges.end());
  return out;
}

std::optional<std::string> prefetcher::export_profile(const oci::digest& manifest) {
  auto text = store_.profile(manifest);
  if (!text) return text;
  // The manifest goes along (when stored, and JSON as it should be): a node that imports the
  // profile then resolves the image's tag with one HEAD, starts the replay there and serves
  // the manifest GET from its store — no manifest round trip before the start's first read.
  const auto m = store_.manifest(manifest);
  boost::system::error_code ec;
  auto doc = boost::json::parse(*text, ec);
  if (!m || ec || !doc.is_object()) return text;
  (void)boost::json::parse(m->bytes, ec);
  if (ec) return text;
  doc.as_object()["manifest_media_type"] = m->media_type;
  doc.as_object()["manifest_bytes"] = m->bytes;
  return boost::json::serialize(doc);
}

bool prefetcher::store_carried_manifest(const oci::digest& manifest, std::string_view json,
                                        std::string& error) {
  boost::system::error_code ec;
  const auto doc = boost::json::parse(json, ec);
  if (ec || !doc.is_object()) return true;  // profile_from_json says what is wrong
  const auto* type = doc.as_object().if_contains("manifest_media_type");
  const auto* bytes = doc.as_object().if_contains("manifest_bytes");
  if (type == nullptr && bytes == nullptr) return true;
  if (type == nullptr || bytes == nullptr || !type->is_string() || !bytes->is_string()) {
    error = "manifest_media_type and manifest_bytes must both be strings";
    return false;
  }
  const std::string_view body(bytes->as_string());
  if (oci::digest_of(body, manifest.algorithm()) != manifest) {
    error = "manifest_bytes are not the manifest " + manifest.str();
    return false;
  }
  if (auto s = store_.put_manifest(manifest, std::string_view(type->as_string()), body); !s.ok()) {
    error = "storing the manifest: " + s.message;
    return false;
  }
  return true;
}

bool prefetcher::import_profile(const oci::digest& manifest, std::string_view json,
                                std::string& error) {
  auto p = cache::profile_from_json(json);
  if (!p) {
    error = "not a valid profile document";
    return false;
  }
  if (p->manifest != manifest) {
    error = "the profile is of manifest " + p->manifest.str() + ", not " + manifest.str();
    return false;
  }
  if (!store_carried_manifest(manifest, json, error)) return false;
  if (auto s = store_.put_profile(manifest, cache::to_json(*p)); !s.ok()) {
    error = "storing the profile: " + s.message;
    return false;
  }
  note_profile(*p);
  write_tag_hints(*p);
  return true;
}

void prefetcher::tag_seen(const oci::digest& manifest, const std::string& upstream,
                          const std::string& repository, const std::string& tag) {
  std::lock_guard lock(mutex_);
  if (seen_tags_.size() >= max_seen_tags) seen_tags_.clear();
  seen_tags_[manifest.str()] = cache::profile_tag{upstream, repository, tag};
}

void prefetcher::write_tag_hints(const cache::profile& p) {
  for (const auto& t : p.tags) {
    if (!oci::is_valid_repository(t.repository) || !oci::is_valid_tag(t.tag)) continue;
    const std::string key =
        content::tag_key(t.upstream, t.repository, t.tag, content::native_accept_class());
    if (store_.tag(key)) continue;  // a record of this node's own stays as it is
    if (auto s = store_.put_tag(key, cache::tag_record{p.manifest, 0}); !s.ok()) {
      log::warn("prefetch", "storing the tag hint ", t.repository, ":", t.tag, ": ", s.message);
    }
  }
}

bool prefetcher::erase_profile(const oci::digest& manifest) {
  const auto s = store_.erase_profile(manifest);
  forget_profile(manifest);
  return s.ok();
}

std::string prefetcher::list_profiles_json() {
  boost::json::array list;
  for (const auto& d : store_.profiles()) {
    const auto text = store_.profile(d);
    if (!text) continue;
    const auto p = cache::profile_from_json(*text);
    if (!p) continue;
    std::uint64_t bytes = 0;
    for (const auto& e : p->entries) bytes += e.bytes.length();
    list.push_back(boost::json::object{{"manifest", d.str()},
                                       {"runs", p->runs},
                                       {"entries", p->entries.size()},
                                       {"bytes", bytes}});
  }
  boost::json::object out;
  out["profiles"] = std::move(list);
  return boost::json::serialize(out);
}

prefetch_stats prefetcher::stats() const {
  std::lock_guard lock(mutex_);
  prefetch_stats s = stats_;
  s.profiles = profile_blobs_.size();
  return s;
}

}  // namespace layercache::server
