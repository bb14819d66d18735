// Manifests and tags in the chunk store: manifests by digest are immutable and kept forever;
// a tag resolves to a digest per (upstream, repository, tag, accept class) with the time it
// was last confirmed upstream.
//
// Thread-safety: one manifest_cache serves all workers; every store access runs on the
// blocking pool, never on the calling I/O thread. Arguments are references: they must live
// until the co_await returns (locals of the awaiting coroutine do).
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "asio/offload.hpp"
#include "cache/chunk_store.hpp"
#include "config/config.hpp"
#include "oci/digest.hpp"

namespace layercache::content {

// What a client's Accept header asks for: media types without parameters, lowercased, sorted,
// deduplicated, comma-separated; types refused with q=0 are left out. Two clients with the same
// class get the same answer from an upstream.
[[nodiscard]] std::string accept_class(std::string_view accept);

// True when a manifest of `media_type` may be served to a client whose accept_class() is
// `accept_cls` (the exact type, "*/*" or "type/*"; parameters and case of `media_type` ignored).
[[nodiscard]] bool accepts(std::string_view accept_cls, std::string_view media_type);

// The accept class of layercache's own manifest requests (oci::default_manifest_accept(): every
// manifest and index type). A tag resolved with it names what the registry stores under the
// tag, whatever a client's Accept; tag hints from imported profiles are kept under it.
[[nodiscard]] const std::string& native_accept_class();

// upstream '\n' repository '\n' tag '\n' accept class: the store key of a tag record.
[[nodiscard]] std::string tag_key(std::string_view upstream, std::string_view repository,
                                  std::string_view tag, std::string_view accept_cls);

// A tag record with the manifest it names.
struct cached_tag {
  oci::digest digest;
  std::int64_t fetched_at = 0;  // unix seconds
  cache::stored_manifest manifest;
};

class manifest_cache {
 public:
  manifest_cache(cache::chunk_store& store, blocking_pool& pool, config::duration tag_ttl,
                 config::duration max_stale);

  // The stored manifest `d`, or nullopt when the store has none.
  boost::asio::awaitable<std::optional<cache::stored_manifest>> manifest(const oci::digest& d);

  // The record of `key` and its manifest; nullopt when either is missing.
  boost::asio::awaitable<std::optional<cached_tag>> tag(const std::string& key);

  // What the store knows of tag `tag` of `repository` at `upstream` for a client whose Accept
  // is `accept_cls`: `own`, the record of that class, when it names a manifest the client
  // accepts; without it, `native`, the record of native_accept_class() when the client accepts
  // its manifest (resolved by layercache itself, or an imported profile's hint). A fresh
  // native record answers like the client's own; a stale one (or a hint) only says what the tag
  // last named. One trip to the blocking pool.
  struct tag_lookup {
    std::optional<cached_tag> own;
    std::optional<cached_tag> native;
  };
  boost::asio::awaitable<tag_lookup> lookup_tag(std::string_view upstream,
                                                std::string_view repository, std::string_view tag,
                                                const std::string& accept_cls);

  // Stores a verified manifest and, when `key` is not empty, points the tag at it (fetched now).
  boost::asio::awaitable<void> put(const oci::digest& d, const std::string& media_type,
                                   const std::string& bytes, const std::string& key);

  // Points `key` at `d` (already stored), confirmed now.
  boost::asio::awaitable<void> confirm(const std::string& key, const oci::digest& d);

  // A HEAD resolved tag `key` (for clients of `accept_cls`) upstream to `d`, not stored yet:
  // when `d` is stored (put(), within tag_ttl) the tag record is written too, as fetched now.
  // containerd resolves a tag with HEAD, then GETs the manifest by digest: without this a
  // node's first pull left no tag record, and its next start asked the upstream again.
  void expect(const std::string& key, const std::string& accept_cls, const oci::digest& d);

  // Whether a record fetched at `fetched_at` may be served without asking the upstream, or,
  // when the upstream failed, served stale.
  [[nodiscard]] bool fresh(std::int64_t fetched_at) const;
  [[nodiscard]] bool may_serve_stale(std::int64_t fetched_at) const;

  // Seconds since `fetched_at` (0 if in the future).
  [[nodiscard]] static std::int64_t age(std::int64_t fetched_at);

 private:
  // tag() on the calling thread (the blocking pool's).
  std::optional<cached_tag> tag_now(const std::string& key);

  cache::chunk_store& store_;
  blocking_pool& pool_;
  std::atomic<config::duration> tag_ttl_;
  std::atomic<config::duration> max_stale_;

  struct expected_tag {
    std::string key;
    std::string accept_cls;
    std::int64_t resolved_at = 0;  // unix seconds
  };
  // Tags to record when their manifest is stored, by manifest digest (bounded).
  std::mutex expected_mutex_;
  std::unordered_map<std::string, std::vector<expected_tag>> expected_;
  std::size_t expected_count_ = 0;
  // The expected tags of `d` that a manifest of `media_type` answers (removed).
  std::vector<expected_tag> take_expected(const oci::digest& d, std::string_view media_type);

 public:
  // Live reload (any thread).
  void set_ttls(config::duration tag_ttl, config::duration max_stale) {
    tag_ttl_.store(tag_ttl);
    max_stale_.store(max_stale);
  }
};

}  // namespace layercache::content
