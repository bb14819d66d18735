// Prometheus metrics of layercached (prometheus-cpp underneath; this header does not include
// it). One registry per process, shared by every worker thread: every method is thread-safe.
//
// Labels are bounded: a route kind, a source, a status class, a configured upstream name, a
// configured mirror's host:port. Never a digest, a repository, a tag or a client address.
//
// The exposition (registry::serialize()):
//   layercache_http_request_duration_seconds{route,source,code}      histogram
//   layercache_http_time_to_first_byte_seconds{route,source,code}    histogram
//   layercache_http_response_bytes_total{source}                    counter (body bytes sent)
//   layercache_http_open_connections                                gauge
//   layercache_upstream_request_duration_seconds{upstream,outcome}  histogram (to the header)
//   layercache_upstream_received_bytes_total{upstream}              counter (body bytes)
//   layercache_upstream_token_fetches_total{upstream,outcome}       counter (ok|error)
//   layercache_upstream_redirects_total{upstream,outcome}           counter
//   (followed|reused|stale|refused)
//   layercache_access_checks_total{upstream,outcome}                counter
//   (allowed|refused|failed) layercache_access_cached_total{upstream} counter (admitted, no check)
//   layercache_mirror_requests_total{upstream,mirror,outcome,reason} counter (served|fallback)
//   layercache_mirror_received_bytes_total{upstream,mirror}         counter (blob bytes)
//   layercache_mirror_breaker_open{upstream,mirror}                 gauge (1: not asked)
//   layercache_cache_used_bytes, layercache_cache_capacity_bytes    gauges
//   layercache_cache_blobs, layercache_cache_chunks                 gauges
//   layercache_cache_evicted_blobs_total, _evicted_bytes_total      counters
//   layercache_cache_corrupt_chunks_total                           counter
//   layercache_cache_memory_bytes                                   gauge (memory_cache held)
//   layercache_cache_memory_reads_total{result}                     counter (hit|shared|miss)
//   layercache_cache_block_cache_bytes                              gauge (block_cache held)
//   layercache_cache_write_buffer_bytes                             gauge (memtables held)
//   layercache_cache_disk_full                                      gauge (1: not storing)
//   layercache_cache_disk_refusals_total                            counter (chunks not stored)
//   layercache_cache_disk_bytes, layercache_cache_disk_free_bytes   gauges (files, free)
//   layercache_cache_disk_max_bytes                                 gauge (cache.max_disk, if set)
//   layercache_cache_disk_compactions_total                         counter (for max_disk)
//   layercache_cache_chunk_reads_total{source}                      counter (store|joined|filled)
//   layercache_cache_fills_total                                    counter (upstream range GETs)
//   layercache_cache_fills_in_flight                                gauge (chunks being filled)
//   layercache_cache_blobs_verified_total                           counter
//   layercache_cache_store_errors_total                             counter
//   layercache_cache_hashed_bytes_total                             counter (digest checks)
//   layercache_cache_background_yields_total                        counter (demand first)
//   layercache_cache_demand_takeovers_total                         counter (demand first)
//   layercache_cache_unproven_reads_total                           counter (one hash per blob)
//   layercache_digest_failures_total{kind}                          counter (blob|stream|manifest)
//   layercache_prefetch_fetched_bytes_total                         counter (chunk bytes)
//   layercache_prefetch_used_bytes_total                            counter (of those, read)
//   layercache_prefetch_queue_depth                                 gauge (jobs waiting)
//   layercache_prefetch_replays_total{kind}                         counter (profile|eager)
//   layercache_prefetch_runs_recorded_total                         counter
//   layercache_prefetch_failed_jobs_total                           counter
//   layercache_prefetch_profiles                                    gauge
//   layercache_prefetch_published_total{outcome}                    counter (ok|error)
//   layercache_prefetch_registry_profiles_total                     counter (found upstream)
//   layercache_manifest_stale_serves_total                          counter
//   layercache_config_reloads_total{outcome}                        counter (ok|error)
//   layercache_build_info{version}                                  gauge, always 1
//   process_resident_memory_bytes, process_virtual_memory_bytes,
//   process_open_fds, process_max_fds, process_cpu_seconds_total,
//   process_start_time_seconds                                      the usual process metrics
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace layercache::metrics {

// What a client request asked for (the route label).
enum class route : std::uint8_t { base, manifest, blob, tags_list, referrers, other };
inline constexpr std::size_t route_count = 6;

// Where the bytes of a response came from (the source label).
//   hit:      the store, no upstream request
//   joined:   a fill another request had started
//   miss:     fetched from upstream for this request (and cached)
//   prefetch: a chunk fetched ahead by prefetch, first read by this request
//   upstream: passed through uncached (cache off, listings, errors relayed from upstream)
//   local:    answered by layercache itself (/v2/, validation errors, 403 for unknown ns=)
enum class source : std::uint8_t { hit, joined, miss, prefetch, upstream, local };
inline constexpr std::size_t source_count = 6;

[[nodiscard]] std::string_view to_string(route r);
[[nodiscard]] std::string_view to_string(source s);
// "2xx", "3xx", "4xx", "5xx"; "other" for anything else (e.g. 0: no response was sent).
[[nodiscard]] std::string_view status_class(unsigned status);

struct request_sample {
  route kind = route::other;
  source from = source::local;
  unsigned status = 0;  // 0: the connection broke before a response header was sent
  std::chrono::nanoseconds duration{0};
  std::chrono::nanoseconds ttfb{0};  // until the response header was written
  std::uint64_t body_bytes = 0;
};

// Gauges and counters whose values live elsewhere and are read at scrape time (see
// registry::on_collect). Counters must only grow.
struct snapshot {
  std::uint64_t open_connections = 0;
  // Store (absent when the cache is off: has_store false).
  bool has_store = false;
  std::uint64_t used_bytes = 0;
  std::uint64_t capacity_bytes = 0;
  std::uint64_t blobs = 0;
  std::uint64_t chunks = 0;
  std::uint64_t evicted_blobs = 0;
  std::uint64_t evicted_bytes = 0;
  std::uint64_t corrupt_chunks = 0;
  std::uint64_t memory_bytes = 0;
  std::uint64_t memory_hits = 0;
  std::uint64_t memory_shared = 0;
  std::uint64_t memory_misses = 0;
  std::uint64_t block_cache_bytes = 0;
  std::uint64_t write_buffer_bytes = 0;
  bool disk_full = false;
  std::uint64_t disk_refusals = 0;
  std::optional<std::uint64_t> disk_bytes;       // the store's files (nullopt: in memory)
  std::optional<std::uint64_t> disk_free_bytes;  // free on their filesystem
  std::uint64_t disk_max_bytes = 0;              // cache.max_disk; 0: no limit
  std::uint64_t disk_compactions = 0;
  // Blob cache.
  std::uint64_t chunks_from_store = 0;
  std::uint64_t chunks_joined = 0;
  std::uint64_t chunks_filled = 0;
  std::uint64_t fills_started = 0;
  std::uint64_t fills_in_flight = 0;
  std::uint64_t blobs_verified = 0;
  std::uint64_t store_errors = 0;
  std::uint64_t blob_digest_failures = 0;
  std::uint64_t hashed_bytes = 0;
  std::uint64_t background_yields = 0;
  std::uint64_t demand_takeovers = 0;
  std::uint64_t unproven_reads = 0;
  std::uint64_t prefetch_fetched_bytes = 0;
  std::uint64_t prefetch_used_bytes = 0;
  // Prefetch (absent when it is off: has_prefetch false).
  bool has_prefetch = false;
  std::uint64_t prefetch_queue_depth = 0;
  std::uint64_t prefetch_profile_replays = 0;
  std::uint64_t prefetch_eager_replays = 0;
  std::uint64_t prefetch_runs_recorded = 0;
  std::uint64_t prefetch_jobs_failed = 0;
  std::uint64_t profiles = 0;
  std::uint64_t prefetch_published = 0;
  std::uint64_t prefetch_publish_failures = 0;
  std::uint64_t prefetch_found_published = 0;
};

// The metrics of one configured upstream. Thread-safe; lives as long as its registry.
class upstream_metrics {
 public:
  virtual ~upstream_metrics() = default;
  // One request to the upstream (or its redirect target), until the response header arrived.
  // `status` 0: no response (connect failure, timeout, broken connection).
  virtual void request(unsigned status, std::chrono::nanoseconds took) = 0;
  virtual void received(std::uint64_t body_bytes) = 0;
  virtual void token_fetch(bool ok) = 0;
  // A request tried again after `reason`: "transport" (no answer: connect, reset), "timeout",
  // "429" or "5xx".
  virtual void retry(std::string_view reason) = 0;
  // A blob fill that stopped before its last byte: "transport" (the body broke off or
  // stalled), "status" (not 200/206), "content_range" (another range than asked), "length".
  virtual void fill_failure(std::string_view reason) = 0;
  // A blob GET and the upstream's redirect: "followed" (the upstream answered 3xx), "reused"
  // (sent straight to where an earlier GET of the blob was redirected), "stale" (that place
  // refused or failed; the upstream was asked again), "refused" (a redirect layercache does not
  // follow: not a blob GET, a scheme downgrade, a forbidden address).
  virtual void redirect(std::string_view outcome) = 0;
  // upstream.access: client — a client's right to a repository asked of the upstream:
  // "allowed", "refused" (401, 403, 404) or "failed" (no answer, another status).
  virtual void access_check(std::string_view outcome) = 0;
  // A request admitted on an earlier check (or a public repository's), without asking.
  virtual void access_cached() = 0;
};

// One mirror of one upstream (upstreams[].mirrors).
class mirror_metrics {
 public:
  virtual ~mirror_metrics() = default;
  // A request answered by the mirror (a blob's size, its bytes, a manifest).
  virtual void served() = 0;
  // A request the mirror could not answer, passed on to the next mirror or the origin:
  // "not_found", "status", "transport", "timeout", "invalid" (a wrong Content-Range or
  // length), "digest" (bytes that were not the digest's), "loop".
  virtual void fallback(std::string_view reason) = 0;
  virtual void received(std::uint64_t body_bytes) = 0;
  // The breaker opened (true: the mirror is not asked for a while) or closed.
  virtual void breaker(bool open) = 0;
};

class registry {
 public:
  registry();
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // One finished client request: both histograms and the served bytes of its source.
  void observe(const request_sample& s);
  // Body bytes sent that came from `from` (for responses mixing sources, beside observe()).
  void served(source from, std::uint64_t bytes);

  // The metrics of upstream `name` (created on first use; the reference stays valid).
  upstream_metrics& upstream(std::string_view name);
  // The metrics of mirror `mirror` (host:port) of upstream `upstream` (the reference stays
  // valid).
  mirror_metrics& mirror(std::string_view upstream, std::string_view mirror);

  void stale_serve();
  void digest_failure(std::string_view kind);  // "stream" or "manifest"
  void config_reload(bool ok);

  // Called at every serialize() to fill the snapshot. Set once, before serving.
  void on_collect(std::function<void(snapshot&)> fill);

  // The text exposition format (version 0.0.4).
  [[nodiscard]] std::string serialize();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// "text/plain; version=0.0.4; charset=utf-8"
inline constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace layercache::metrics
