#include "metrics/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

namespace layercache::metrics {
namespace {

constexpr std::array<std::string_view, route_count> route_names = {
    "base", "manifest", "blob", "tags_list", "referrers", "other"};
constexpr std::array<std::string_view, source_count> source_names = {
    "hit", "joined", "miss", "prefetch", "upstream", "local"};
constexpr std::array<std::string_view, 5> class_names = {"2xx", "3xx", "4xx", "5xx", "other"};

std::size_t class_index(unsigned status) {
  if (status >= 200 && status < 600) return status / 100 - 2;
  return 4;
}

// From a sub-millisecond store hit to a multi-minute cold blob.
const prometheus::Histogram::BucketBoundaries& latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,   0.5,     1,      2.5,   5,      10,    30,   60,    120,  300};
  return b;
}

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// Sets a counter to a total kept elsewhere (it only ever grows).
void set_total(prometheus::Counter& c, std::uint64_t total) {
  const double delta = static_cast<double>(total) - c.Value();
  if (delta > 0) c.Increment(delta);
}

// Process figures from /proc (Linux).
struct process_figures {
  double resident = 0, virtual_size = 0, cpu_seconds = 0, start_time = 0;
  double open_fds = 0, max_fds = 0;
};

process_figures read_process() {
  process_figures p;
  const long page = ::sysconf(_SC_PAGESIZE);
  const long ticks = ::sysconf(_SC_CLK_TCK);
  if (std::ifstream statm("/proc/self/statm"); statm) {
    double size = 0, resident = 0;
    statm >> size >> resident;
    p.virtual_size = size * static_cast<double>(page);
    p.resident = resident * static_cast<double>(page);
  }
  if (std::ifstream stat("/proc/self/stat"); stat) {
    std::string line;
    std::getline(stat, line);
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream rest(line.substr(close + 2));
      std::string field;
      double utime = 0, stime = 0, start = 0;
      for (int i = 3; rest >> field; ++i) {
        if (i == 14) utime = std::stod(field);
        if (i == 15) stime = std::stod(field);
        if (i == 22) {
          start = std::stod(field);
          break;
        }
      }
      p.cpu_seconds = (utime + stime) / static_cast<double>(ticks);
      double boot = 0;
      if (std::ifstream s("/proc/stat"); s) {
        std::string key;
        while (s >> key) {
          if (key == "btime") {
            s >> boot;
            break;
          }
          s.ignore(1 << 16, '\n');
        }
      }
      p.start_time = boot + start / static_cast<double>(ticks);
    }
  }
  std::error_code ec;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  p.open_fds = fds;
  if (std::ifstream limits("/proc/self/limits"); limits) {
    std::string line;
    while (std::getline(limits, line)) {
      if (line.starts_with("Max open files")) {
        std::istringstream in(line.substr(14));
        in >> p.max_fds;
        break;
      }
    }
  }
  return p;
}

class upstream_impl final : public upstream_metrics {
 public:
  upstream_impl(std::string name, prometheus::Family<prometheus::Histogram>& duration,
                prometheus::Family<prometheus::Counter>& bytes,
                prometheus::Family<prometheus::Counter>& tokens,
                prometheus::Family<prometheus::Counter>& retries,
                prometheus::Family<prometheus::Counter>& fill_failures,
                prometheus::Family<prometheus::Counter>& redirects,
                prometheus::Family<prometheus::Counter>& access_checks,
                prometheus::Family<prometheus::Counter>& access_cached)
      : name_(std::move(name)),
        duration_family_(duration),
        retry_family_(retries),
        fill_failure_family_(fill_failures),
        redirect_family_(redirects),
        access_family_(access_checks) {
    received_ = &bytes.Add({{"upstream", name_}});
    access_cached_ = &access_cached.Add({{"upstream", name_}});
    token_ok_ = &tokens.Add({{"upstream", name_}, {"outcome", "ok"}});
    token_error_ = &tokens.Add({{"upstream", name_}, {"outcome", "error"}});
  }

  void request(unsigned status, std::chrono::nanoseconds took) override {
    if (status != 0 && (status < 200 || status >= 600)) return;  // not a final answer
    const std::size_t i = status == 0 ? 4 : class_index(status);
    prometheus::Histogram* h = durations_[i].load(std::memory_order_acquire);
    if (h == nullptr) {
      const std::string outcome(status == 0 ? "error" : class_names[i]);
      std::lock_guard lock(mutex_);
      h = &duration_family_.Add({{"upstream", name_}, {"outcome", outcome}}, latency_buckets());
      durations_[i].store(h, std::memory_order_release);
    }
    h->Observe(seconds(took));
  }
  void received(std::uint64_t n) override { received_->Increment(static_cast<double>(n)); }
  void token_fetch(bool ok) override { (ok ? token_ok_ : token_error_)->Increment(); }
  void retry(std::string_view reason) override { count(retry_family_, "reason", reason); }
  void fill_failure(std::string_view reason) override {
    count(fill_failure_family_, "reason", reason);
  }
  void redirect(std::string_view outcome) override { count(redirect_family_, "outcome", outcome); }
  void access_check(std::string_view outcome) override {
    count(access_family_, "outcome", outcome);
  }
  void access_cached() override { access_cached_->Increment(); }

 private:
  // Counters by one more label, created on first use (reasons are few and fixed).
  void count(prometheus::Family<prometheus::Counter>& family, const std::string& label,
             std::string_view value) {
    std::lock_guard lock(mutex_);
    family.Add({{"upstream", name_}, {label, std::string(value)}}).Increment();
  }

  std::string name_;
  prometheus::Family<prometheus::Histogram>& duration_family_;
  prometheus::Family<prometheus::Counter>& retry_family_;
  prometheus::Family<prometheus::Counter>& fill_failure_family_;
  prometheus::Family<prometheus::Counter>& redirect_family_;
  prometheus::Family<prometheus::Counter>& access_family_;
  prometheus::Counter* access_cached_;
  std::mutex mutex_;
  std::array<std::atomic<prometheus::Histogram*>, 5> durations_{};  // 2xx..5xx, error
  prometheus::Counter* received_;
  prometheus::Counter* token_ok_;
  prometheus::Counter* token_error_;
};

class mirror_impl final : public mirror_metrics {
 public:
  mirror_impl(const prometheus::Labels& labels, prometheus::Family<prometheus::Counter>& requests,
              prometheus::Family<prometheus::Counter>& bytes,
              prometheus::Family<prometheus::Gauge>& breaker)
      : labels_(labels), requests_(requests) {
    served_ = &requests.Add(with("outcome", "served"));
    received_ = &bytes.Add(labels);
    open_ = &breaker.Add(labels);
  }
  void served() override { served_->Increment(); }
  void fallback(std::string_view reason) override {
    std::lock_guard lock(mutex_);
    auto labels = with("outcome", "fallback");
    labels.emplace("reason", std::string(reason));
    requests_.Add(labels).Increment();
  }
  void received(std::uint64_t n) override { received_->Increment(static_cast<double>(n)); }
  void breaker(bool open) override { open_->Set(open ? 1 : 0); }

 private:
  [[nodiscard]] prometheus::Labels with(const std::string& key, const std::string& value) const {
    auto labels = labels_;
    labels.emplace(key, value);
    return labels;
  }
  prometheus::Labels labels_;
  prometheus::Family<prometheus::Counter>& requests_;
  std::mutex mutex_;
  prometheus::Counter* served_;
  prometheus::Counter* received_;
  prometheus::Gauge* open_;
};

}  // namespace

std::string_view to_string(route r) { return route_names[static_cast<std::size_t>(r)]; }
std::string_view to_string(source s) { return source_names[static_cast<std::size_t>(s)]; }
std::string_view status_class(unsigned status) { return class_names[class_index(status)]; }

struct registry::impl {
  prometheus::Registry reg;

  prometheus::Family<prometheus::Histogram>& request_duration =
      prometheus::BuildHistogram()
          .Name("layercache_http_request_duration_seconds")
          .Help("Client requests, from the request header read to the last byte written.")
          .Register(reg);
  prometheus::Family<prometheus::Histogram>& ttfb =
      prometheus::BuildHistogram()
          .Name("layercache_http_time_to_first_byte_seconds")
          .Help("Client requests, from the request header read to the response header written.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& response_bytes =
      prometheus::BuildCounter()
          .Name("layercache_http_response_bytes_total")
          .Help("Response body bytes sent to clients, by where they came from.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& open_connections =
      prometheus::BuildGauge()
          .Name("layercache_http_open_connections")
          .Help("Client connections open now.")
          .Register(reg);
  prometheus::Family<prometheus::Histogram>& upstream_duration =
      prometheus::BuildHistogram()
          .Name("layercache_upstream_request_duration_seconds")
          .Help(
              "Requests to upstream registries (and their redirect targets), until the "
              "response header arrived; outcome is the status class or error.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& upstream_bytes =
      prometheus::BuildCounter()
          .Name("layercache_upstream_received_bytes_total")
          .Help("Response body bytes received from upstream registries.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& upstream_retries =
      prometheus::BuildCounter()
          .Name("layercache_upstream_retries_total")
          .Help("Upstream requests tried again, by what went wrong with the previous try.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& upstream_fill_failures =
      prometheus::BuildCounter()
          .Name("layercache_upstream_fill_failures_total")
          .Help(
              "Blob fills from upstream that stopped before their last byte (readers fetch the "
              "rest again), by reason.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& upstream_redirects =
      prometheus::BuildCounter()
          .Name("layercache_upstream_redirects_total")
          .Help(
              "Blob GETs and the upstream's redirects, by outcome: followed (the upstream "
              "answered 3xx), reused (sent straight to where the blob was redirected before), "
              "stale (that place refused or failed; the upstream was asked again).")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& token_fetches =
      prometheus::BuildCounter()
          .Name("layercache_upstream_token_fetches_total")
          .Help("Bearer token requests to upstream token endpoints.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& access_checks =
      prometheus::BuildCounter()
          .Name("layercache_access_checks_total")
          .Help(
              "access: client — a client's right to pull a repository asked of the upstream, by "
              "outcome: allowed, refused (401, 403, 404), failed (no answer, another status).")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& access_cached =
      prometheus::BuildCounter()
          .Name("layercache_access_cached_total")
          .Help(
              "access: client — requests admitted on an earlier check of the same credential "
              "and repository (or of a public repository), without asking the upstream.")
          .Register(reg);

  prometheus::Family<prometheus::Counter>& mirror_requests =
      prometheus::BuildCounter()
          .Name("layercache_mirror_requests_total")
          .Help(
              "Requests to an upstream's mirrors: served, or fallback to the next mirror or the "
              "origin, by reason.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& mirror_bytes =
      prometheus::BuildCounter()
          .Name("layercache_mirror_received_bytes_total")
          .Help("Blob bytes received from an upstream's mirrors.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& mirror_breaker =
      prometheus::BuildGauge()
          .Name("layercache_mirror_breaker_open")
          .Help("1 while a mirror's breaker is open: it failed repeatedly and is not asked.")
          .Register(reg);

  prometheus::Family<prometheus::Gauge>& used = prometheus::BuildGauge()
                                                    .Name("layercache_cache_used_bytes")
                                                    .Help("Chunk bytes in the store.")
                                                    .Register(reg);
  prometheus::Family<prometheus::Gauge>& capacity =
      prometheus::BuildGauge()
          .Name("layercache_cache_capacity_bytes")
          .Help("Chunk bytes the store keeps before evicting (cache.capacity).")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& blobs = prometheus::BuildGauge()
                                                     .Name("layercache_cache_blobs")
                                                     .Help("Blobs with chunks in the store.")
                                                     .Register(reg);
  prometheus::Family<prometheus::Gauge>& chunks = prometheus::BuildGauge()
                                                      .Name("layercache_cache_chunks")
                                                      .Help("Chunks in the store.")
                                                      .Register(reg);
  prometheus::Family<prometheus::Counter>& evicted_blobs =
      prometheus::BuildCounter()
          .Name("layercache_cache_evicted_blobs_total")
          .Help("Blobs evicted to stay within capacity.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& evicted_bytes =
      prometheus::BuildCounter()
          .Name("layercache_cache_evicted_bytes_total")
          .Help("Chunk bytes evicted to stay within capacity.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& corrupt =
      prometheus::BuildCounter()
          .Name("layercache_cache_corrupt_chunks_total")
          .Help("Stored chunks that failed their checksum and were dropped.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& memory_bytes =
      prometheus::BuildGauge()
          .Name("layercache_cache_memory_bytes")
          .Help("Chunk bytes held by the in-memory chunk cache (cache.memory_cache).")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& memory_reads =
      prometheus::BuildCounter()
          .Name("layercache_cache_memory_reads_total")
          .Help(
              "Stored-chunk reads that found the chunk in the memory cache (hit), held by "
              "another reader (shared), or read the store (miss).")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& block_cache_bytes =
      prometheus::BuildGauge()
          .Name("layercache_cache_block_cache_bytes")
          .Help(
              "Bytes held by RocksDB's block cache (cache.block_cache): index and filter "
              "blocks, records, manifests; chunks are kept by the memory cache instead.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& write_buffer_bytes =
      prometheus::BuildGauge()
          .Name("layercache_cache_write_buffer_bytes")
          .Help(
              "Bytes of stored chunks and records held in RocksDB's memtables until they are "
              "flushed to table files.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& disk_full =
      prometheus::BuildGauge()
          .Name("layercache_cache_disk_full")
          .Help(
              "1 while the disk under the store is below cache.min_free_disk, the store's files "
              "reach cache.max_disk, or a write failed: new chunks are served from upstream but "
              "not stored.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& disk_refusals =
      prometheus::BuildCounter()
          .Name("layercache_cache_disk_refusals_total")
          .Help(
              "Chunks not stored for lack of disk (cache.min_free_disk, cache.max_disk, a failed "
              "write).")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& disk_bytes =
      prometheus::BuildGauge()
          .Name("layercache_cache_disk_bytes")
          .Help(
              "Bytes the store's files take on the disk (allocated blocks under cache.path): "
              "stored chunks, and deleted ones until a compaction returns their space.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& disk_free_bytes =
      prometheus::BuildGauge()
          .Name("layercache_cache_disk_free_bytes")
          .Help("Bytes free (for an unprivileged user) on the filesystem under cache.path.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& disk_max_bytes =
      prometheus::BuildGauge()
          .Name("layercache_cache_disk_max_bytes")
          .Help("cache.max_disk: the most the store's files may take (absent when unlimited).")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& disk_compactions =
      prometheus::BuildCounter()
          .Name("layercache_cache_disk_compactions_total")
          .Help("Compactions started because the store's files reached cache.max_disk.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& chunk_reads =
      prometheus::BuildCounter()
          .Name("layercache_cache_chunk_reads_total")
          .Help("Chunk reads by readers: from the store, joined to a fill, or filled.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& fills =
      prometheus::BuildCounter()
          .Name("layercache_cache_fills_total")
          .Help("Upstream range requests started to fill missing chunks.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& fills_in_flight =
      prometheus::BuildGauge()
          .Name("layercache_cache_fills_in_flight")
          .Help("Chunks being fetched from upstream now.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& verified =
      prometheus::BuildCounter()
          .Name("layercache_cache_blobs_verified_total")
          .Help("Blobs completed in the background and matched to their digest.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& store_errors =
      prometheus::BuildCounter()
          .Name("layercache_cache_store_errors_total")
          .Help("Store writes that failed (bytes were still served).")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& hashed =
      prometheus::BuildCounter()
          .Name("layercache_cache_hashed_bytes_total")
          .Help("Bytes hashed to check blobs against their digests (once per blob for a herd).")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& background_yields =
      prometheus::BuildCounter()
          .Name("layercache_cache_background_yields_total")
          .Help(
              "Times a background completion's fill stopped reading its response "
              "while clients' fills were in flight.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& demand_takeovers =
      prometheus::BuildCounter()
          .Name("layercache_cache_demand_takeovers_total")
          .Help(
              "Fills a client's read started for chunks a background fill had asked for but "
              "not begun receiving.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& unproven_reads =
      prometheus::BuildCounter()
          .Name("layercache_cache_unproven_reads_total")
          .Help(
              "Whole reads riding a blob's one hash that could not show it took the bytes they "
              "sent (the store lost a chunk meanwhile): failed before their last byte.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& prefetch_fetched =
      prometheus::BuildCounter()
          .Name("layercache_prefetch_fetched_bytes_total")
          .Help("Chunk bytes fetched from upstream ahead of clients by prefetch.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& prefetch_used =
      prometheus::BuildCounter()
          .Name("layercache_prefetch_used_bytes_total")
          .Help("Chunk bytes fetched by prefetch that a client read later (precision numerator).")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& prefetch_queue =
      prometheus::BuildGauge()
          .Name("layercache_prefetch_queue_depth")
          .Help("Prefetch jobs waiting to start.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& prefetch_replays =
      prometheus::BuildCounter()
          .Name("layercache_prefetch_replays_total")
          .Help(
              "Manifests served whose access profile (profile) or whole blobs (eager) were "
              "fetched ahead.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& prefetch_runs =
      prometheus::BuildCounter()
          .Name("layercache_prefetch_runs_recorded_total")
          .Help("Recorded runs (one start's reads) merged into access profiles.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& prefetch_failed =
      prometheus::BuildCounter()
          .Name("layercache_prefetch_failed_jobs_total")
          .Help("Prefetch jobs whose upstream fetch failed.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& prefetch_published =
      prometheus::BuildCounter()
          .Name("layercache_prefetch_published_total")
          .Help("Profiles pushed to an upstream registry as OCI artifacts, by outcome.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& prefetch_registry_profiles =
      prometheus::BuildCounter()
          .Name("layercache_prefetch_registry_profiles_total")
          .Help("Profiles found published in an upstream registry and imported.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& profiles = prometheus::BuildGauge()
                                                        .Name("layercache_prefetch_profiles")
                                                        .Help("Access profiles in the store.")
                                                        .Register(reg);
  prometheus::Family<prometheus::Counter>& digest_failures =
      prometheus::BuildCounter()
          .Name("layercache_digest_failures_total")
          .Help("Bytes from upstream that did not match their digest (never served whole).")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& stale =
      prometheus::BuildCounter()
          .Name("layercache_manifest_stale_serves_total")
          .Help("Tags served from the store because the upstream failed.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& reloads =
      prometheus::BuildCounter()
          .Name("layercache_config_reloads_total")
          .Help("Configuration reloads (SIGHUP), by outcome.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& build_info =
      prometheus::BuildGauge()
          .Name("layercache_build_info")
          .Help("Always 1; the version label says which build runs.")
          .Register(reg);

  prometheus::Family<prometheus::Gauge>& resident = prometheus::BuildGauge()
                                                        .Name("process_resident_memory_bytes")
                                                        .Help("Resident memory size in bytes.")
                                                        .Register(reg);
  prometheus::Family<prometheus::Gauge>& virtual_memory = prometheus::BuildGauge()
                                                              .Name("process_virtual_memory_bytes")
                                                              .Help("Virtual memory size in bytes.")
                                                              .Register(reg);
  prometheus::Family<prometheus::Gauge>& open_fds = prometheus::BuildGauge()
                                                        .Name("process_open_fds")
                                                        .Help("Number of open file descriptors.")
                                                        .Register(reg);
  prometheus::Family<prometheus::Gauge>& max_fds =
      prometheus::BuildGauge()
          .Name("process_max_fds")
          .Help("Maximum number of open file descriptors.")
          .Register(reg);
  prometheus::Family<prometheus::Counter>& cpu =
      prometheus::BuildCounter()
          .Name("process_cpu_seconds_total")
          .Help("Total user and system CPU time spent in seconds.")
          .Register(reg);
  prometheus::Family<prometheus::Gauge>& start_time =
      prometheus::BuildGauge()
          .Name("process_start_time_seconds")
          .Help("Start time of the process since unix epoch in seconds.")
          .Register(reg);

  // Created on first use; index = (route, source, class).
  static constexpr std::size_t combos = route_count * source_count * class_names.size();
  std::array<std::atomic<prometheus::Histogram*>, combos> durations{};
  std::array<std::atomic<prometheus::Histogram*>, combos> ttfbs{};
  std::array<prometheus::Counter*, source_count> bytes_by_source{};
  std::mutex mutex;  // guards lazy creation and the maps below
  std::map<std::string, std::unique_ptr<upstream_impl>, std::less<>> upstreams;
  std::map<std::string, std::unique_ptr<mirror_impl>, std::less<>> mirrors;  // upstream + mirror
  std::map<std::string, prometheus::Counter*, std::less<>> digest_by_kind;
  std::function<void(snapshot&)> fill;
  std::mutex collect_mutex;  // one scrape at a time

  prometheus::Counter* stale_counter = &stale.Add({});
  prometheus::Counter* reload_ok = &reloads.Add({{"outcome", "ok"}});
  prometheus::Counter* reload_error = &reloads.Add({{"outcome", "error"}});
  prometheus::Gauge* open_gauge = &open_connections.Add({});

  impl() {
    for (std::size_t i = 0; i < source_count; ++i) {
      bytes_by_source[i] = &response_bytes.Add({{"source", std::string(source_names[i])}});
    }
    for (const char* kind : {"blob", "stream", "manifest"}) {
      digest_by_kind[kind] = &digest_failures.Add({{"kind", kind}});
    }
    build_info.Add({{"version", LAYERCACHE_VERSION}}).Set(1);
  }

  prometheus::Histogram& histogram(std::array<std::atomic<prometheus::Histogram*>, combos>& cache,
                                   prometheus::Family<prometheus::Histogram>& family,
                                   const request_sample& s) {
    const std::size_t c = class_index(s.status);
    const std::size_t i =
        (static_cast<std::size_t>(s.kind) * source_count + static_cast<std::size_t>(s.from)) *
            class_names.size() +
        c;
    if (auto* h = cache[i].load(std::memory_order_acquire)) return *h;
    std::lock_guard lock(mutex);
    auto* h = &family.Add({{"route", std::string(to_string(s.kind))},
                           {"source", std::string(to_string(s.from))},
                           {"code", std::string(class_names[c])}},
                          latency_buckets());
    cache[i].store(h, std::memory_order_release);
    return *h;
  }
};

registry::registry() : impl_(std::make_unique<impl>()) {}
registry::~registry() = default;

void registry::observe(const request_sample& s) {
  impl_->histogram(impl_->durations, impl_->request_duration, s).Observe(seconds(s.duration));
  impl_->histogram(impl_->ttfbs, impl_->ttfb, s).Observe(seconds(s.ttfb));
}

void registry::served(source from, std::uint64_t bytes) {
  if (bytes > 0) {
    impl_->bytes_by_source[static_cast<std::size_t>(from)]->Increment(static_cast<double>(bytes));
  }
}

upstream_metrics& registry::upstream(std::string_view name) {
  std::lock_guard lock(impl_->mutex);
  auto it = impl_->upstreams.find(name);
  if (it == impl_->upstreams.end()) {
    it = impl_->upstreams
             .emplace(
                 std::string(name),
                 std::make_unique<upstream_impl>(
                     std::string(name), impl_->upstream_duration, impl_->upstream_bytes,
                     impl_->token_fetches, impl_->upstream_retries, impl_->upstream_fill_failures,
                     impl_->upstream_redirects, impl_->access_checks, impl_->access_cached))
             .first;
  }
  return *it->second;
}

mirror_metrics& registry::mirror(std::string_view upstream, std::string_view mirror) {
  std::lock_guard lock(impl_->mutex);
  std::string key = std::string(upstream) + '\n' + std::string(mirror);
  auto it = impl_->mirrors.find(key);
  if (it == impl_->mirrors.end()) {
    const prometheus::Labels labels{{"upstream", std::string(upstream)},
                                    {"mirror", std::string(mirror)}};
    it = impl_->mirrors
             .emplace(std::move(key),
                      std::make_unique<mirror_impl>(labels, impl_->mirror_requests,
                                                    impl_->mirror_bytes, impl_->mirror_breaker))
             .first;
  }
  return *it->second;
}

void registry::stale_serve() { impl_->stale_counter->Increment(); }

void registry::digest_failure(std::string_view kind) {
  std::lock_guard lock(impl_->mutex);
  auto it = impl_->digest_by_kind.find(kind);
  if (it != impl_->digest_by_kind.end()) it->second->Increment();
}

void registry::config_reload(bool ok) {
  (ok ? impl_->reload_ok : impl_->reload_error)->Increment();
}

void registry::on_collect(std::function<void(snapshot&)> fill) { impl_->fill = std::move(fill); }

std::string registry::serialize() {
  auto& m = *impl_;
  std::lock_guard lock(m.collect_mutex);
  snapshot s;
  if (m.fill) m.fill(s);
  m.open_gauge->Set(static_cast<double>(s.open_connections));
  if (s.has_store) {
    m.used.Add({}).Set(static_cast<double>(s.used_bytes));
    m.capacity.Add({}).Set(static_cast<double>(s.capacity_bytes));
    m.blobs.Add({}).Set(static_cast<double>(s.blobs));
    m.chunks.Add({}).Set(static_cast<double>(s.chunks));
    set_total(m.evicted_blobs.Add({}), s.evicted_blobs);
    set_total(m.evicted_bytes.Add({}), s.evicted_bytes);
    set_total(m.corrupt.Add({}), s.corrupt_chunks);
    m.memory_bytes.Add({}).Set(static_cast<double>(s.memory_bytes));
    set_total(m.memory_reads.Add({{"result", "hit"}}), s.memory_hits);
    set_total(m.memory_reads.Add({{"result", "shared"}}), s.memory_shared);
    set_total(m.memory_reads.Add({{"result", "miss"}}), s.memory_misses);
    m.block_cache_bytes.Add({}).Set(static_cast<double>(s.block_cache_bytes));
    m.write_buffer_bytes.Add({}).Set(static_cast<double>(s.write_buffer_bytes));
    m.disk_full.Add({}).Set(s.disk_full ? 1.0 : 0.0);
    set_total(m.disk_refusals.Add({}), s.disk_refusals);
    if (s.disk_bytes) m.disk_bytes.Add({}).Set(static_cast<double>(*s.disk_bytes));
    if (s.disk_free_bytes) m.disk_free_bytes.Add({}).Set(static_cast<double>(*s.disk_free_bytes));
    if (s.disk_max_bytes != 0) {
      m.disk_max_bytes.Add({}).Set(static_cast<double>(s.disk_max_bytes));
    }
    set_total(m.disk_compactions.Add({}), s.disk_compactions);
    set_total(m.chunk_reads.Add({{"source", "store"}}), s.chunks_from_store);
    set_total(m.chunk_reads.Add({{"source", "joined"}}), s.chunks_joined);
    set_total(m.chunk_reads.Add({{"source", "filled"}}), s.chunks_filled);
    set_total(m.fills.Add({}), s.fills_started);
    m.fills_in_flight.Add({}).Set(static_cast<double>(s.fills_in_flight));
    set_total(m.verified.Add({}), s.blobs_verified);
    set_total(m.store_errors.Add({}), s.store_errors);
    set_total(m.hashed.Add({}), s.hashed_bytes);
    set_total(m.background_yields.Add({}), s.background_yields);
    set_total(m.demand_takeovers.Add({}), s.demand_takeovers);
    set_total(m.unproven_reads.Add({}), s.unproven_reads);
    {
      std::lock_guard l(m.mutex);
      set_total(*m.digest_by_kind["blob"], s.blob_digest_failures);
    }
  }
  if (s.has_prefetch) {
    set_total(m.prefetch_fetched.Add({}), s.prefetch_fetched_bytes);
    set_total(m.prefetch_used.Add({}), s.prefetch_used_bytes);
    m.prefetch_queue.Add({}).Set(static_cast<double>(s.prefetch_queue_depth));
    set_total(m.prefetch_replays.Add({{"kind", "profile"}}), s.prefetch_profile_replays);
    set_total(m.prefetch_replays.Add({{"kind", "eager"}}), s.prefetch_eager_replays);
    set_total(m.prefetch_runs.Add({}), s.prefetch_runs_recorded);
    set_total(m.prefetch_failed.Add({}), s.prefetch_jobs_failed);
    m.profiles.Add({}).Set(static_cast<double>(s.profiles));
    set_total(m.prefetch_published.Add({{"outcome", "ok"}}), s.prefetch_published);
    set_total(m.prefetch_published.Add({{"outcome", "error"}}), s.prefetch_publish_failures);
    set_total(m.prefetch_registry_profiles.Add({}), s.prefetch_found_published);
  }
  const auto p = read_process();
  m.resident.Add({}).Set(p.resident);
  m.virtual_memory.Add({}).Set(p.virtual_size);
  m.open_fds.Add({}).Set(p.open_fds);
  m.max_fds.Add({}).Set(p.max_fds);
  {
    auto& c = m.cpu.Add({});
    const double delta = p.cpu_seconds - c.Value();
    if (delta > 0) c.Increment(delta);
  }
  m.start_time.Add({}).Set(p.start_time);

  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, m.reg.Collect());
  return out.str();
}

}  // namespace layercache::metrics
