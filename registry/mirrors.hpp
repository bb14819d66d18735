// The mirrors of one upstream (`upstreams[].mirrors`, issue 21): registry-API endpoints asked
// before the origin for blobs (their size, whole and ranged reads) and manifests by digest — a
// node-local P2P daemon, a zonal tier of layercaches, a pull-through registry. Tags are
// resolved at the origin unless a mirror is marked `resolve`.
//
// Requests to a mirror carry `ns=<origin host>` (as containerd sends it, so that a Spegel,
// dfdaemon or layercache tier routes them) and `Via: 1.1 <this layercache>` (so that a
// layercache reached this way never routes the request to its own mirrors, and one reached
// again refuses it: no loops). The origin's credentials never go to a mirror: each has its
// own client with its own auth.
//
// What fails at a mirror — no answer, a slow first byte (its `timeouts.response`), a 404 or
// any other non-2xx, a wrong Content-Range, a body that breaks off — moves that request on to
// the next mirror, then the origin; a body that broke off continues from its next byte there.
// A mirror that fails `mirror_breaker.failures` times in a row is not asked for
// `mirror_breaker.open_for`. Bytes are verified end to end by the caller (content/): a blob
// whose bytes did not match its digest is distrusted — read from the origin only for a while —
// and the mirrors that served it are failed at once.
//
// Include only from .cpp files: this header brings in Beast (through upstream_client.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "oci/digest.hpp"
#include "registry/upstream_client.hpp"

namespace layercache::metrics {
class mirror_metrics;
}  // namespace layercache::metrics

namespace layercache::registry {

// The `ns=` value that names `origin` to a mirror, as containerd sends it: the host, with
// ":port" when it is not the scheme's default; Docker Hub's hosts as "docker.io".
[[nodiscard]] std::string ns_value(const config::upstream& origin);

// The order in which to ask `members` for `key` under rendezvous (highest random weight)
// hashing: each key's owner first, then the rest by the same scores. Stable across processes
// and machines (FNV-1a and a 64-bit finaliser, not std::hash), so every node agrees on the
// owner; removing a member moves only the keys it owned.
[[nodiscard]] std::vector<std::size_t> rendezvous_order(const std::vector<std::string>& members,
                                                        std::string_view key);

// The settings a mirror's client uses: its URL, CA file, auth and timeouts, one try per
// request (a failure moves on instead), no warm connections, redirects as the origin allows.
[[nodiscard]] config::upstream mirror_endpoint(const config::upstream& origin,
                                               const config::mirror& m);

// What an upstream's mirrors have shown, shared by every worker (thread-safe).
class mirror_state {
 public:
  using clock = std::chrono::steady_clock;

  // `via`: this layercache's Via value ("1.1 layercache-<id>").
  mirror_state(const config::upstream& origin, std::string via);

  [[nodiscard]] std::size_t size() const { return endpoints_.size(); }
  [[nodiscard]] const config::upstream& endpoint(std::size_t k) const { return endpoints_[k]; }
  [[nodiscard]] const std::string& label(std::size_t k) const { return labels_[k]; }
  [[nodiscard]] const std::string& ns() const { return ns_; }
  [[nodiscard]] const std::string& via() const { return via_; }
  [[nodiscard]] const config::upstream& origin() const { return origin_; }

  // Where each mirror's requests and fallbacks are counted (null: nowhere). Set before use.
  void set_metrics(std::size_t k, metrics::mirror_metrics* m) { metrics_[k] = m; }
  [[nodiscard]] metrics::mirror_metrics* metrics(std::size_t k) const { return metrics_[k]; }

  // The mirrors to ask for blob or manifest `digest`, best first (as listed, or by
  // rendezvous hashing of the digest), without those whose breaker is open; none while the
  // digest is distrusted.
  [[nodiscard]] std::vector<std::size_t> candidates(std::string_view digest,
                                                    clock::time_point now = clock::now());
  // The mirrors that resolve tags (`resolve: true`), as listed, breakers respected.
  [[nodiscard]] std::vector<std::size_t> resolvers(clock::time_point now = clock::now());

  void succeeded(std::size_t k);
  // A request mirror `k` failed (counted under `reason`); opens its breaker after
  // `mirror_breaker.failures` in a row (logged once).
  void failed(std::size_t k, std::string_view reason, clock::time_point now = clock::now());
  // A request mirror `k` could not answer but did not fail ("not_found"): counted only.
  void passed(std::size_t k, std::string_view reason);
  // Mirror `k` served bytes of blob `d` (remembered for distrust()).
  void served(std::size_t k, const oci::digest& d);
  // Blob `d`'s bytes did not match it: the mirrors that served any of them are failed at once
  // (their breakers open), and `d` is read at the origin only for `distrust_for`.
  void distrust(const oci::digest& d, clock::time_point now = clock::now());
  [[nodiscard]] bool breaker_open(std::size_t k, clock::time_point now = clock::now());

  static constexpr std::chrono::minutes distrust_for{10};

 private:
  struct health {
    unsigned failures = 0;  // in a row
    clock::time_point open_until{};
    bool open = false;  // as last reported (logged and counted once per opening)
  };
  void open_breaker(std::size_t k, clock::time_point now);          // under mutex_
  [[nodiscard]] bool usable(std::size_t k, clock::time_point now);  // under mutex_

  config::upstream origin_;
  std::vector<config::upstream> endpoints_;
  std::vector<std::string> labels_;  // host:port
  std::vector<std::string> keys_;    // for rendezvous hashing: scheme://host:port
  std::vector<metrics::mirror_metrics*> metrics_;
  std::string ns_;
  std::string via_;

  std::mutex mutex_;
  std::vector<health> health_;
  // Which mirrors served bytes of a blob lately (bit k: mirror k), at most max_tracked.
  std::map<std::string, std::uint32_t, std::less<>> served_;
  std::map<std::string, clock::time_point, std::less<>> distrusted_;  // until
  static constexpr std::size_t max_tracked = 4096;
};

// The mirrors of one upstream on one worker: a client for each, the shared state, and a client
// of the origin that asks no mirror (for requests that already came through a layercache).
class mirror_clients {
 public:
  mirror_clients(mirror_state& state, std::vector<std::unique_ptr<upstream_client>> clients,
                 std::unique_ptr<upstream_client> origin_only)
      : state_(state), clients_(std::move(clients)), origin_only_(std::move(origin_only)) {}

  [[nodiscard]] mirror_state& state() const { return state_; }
  [[nodiscard]] upstream_client& client(std::size_t k) const { return *clients_[k]; }
  [[nodiscard]] upstream_client& origin_only() const { return *origin_only_; }

 private:
  mirror_state& state_;
  std::vector<std::unique_ptr<upstream_client>> clients_;
  std::unique_ptr<upstream_client> origin_only_;
};

// What a request to a mirror came to, for fallback: "" when it answered; else the reason, and
// whether it counts against the mirror's breaker.
struct mirror_verdict {
  std::string_view reason;
  bool failure = false;
};
[[nodiscard]] mirror_verdict judge_failure(const upstream_failure& f);
[[nodiscard]] mirror_verdict judge_status(unsigned status);

// Adds `ns=` and Via to a request for mirror state `s`.
void address_to_mirror(upstream_request& req, const mirror_state& s);

// This process's Via value, "1.1 layercache-<16 hex digits>", random per process.
[[nodiscard]] std::string make_via();
// Whether a request's Via header names a layercache (any), or this one (`own`: make_via()).
[[nodiscard]] bool via_names_layercache(std::string_view via);
[[nodiscard]] bool via_names(std::string_view via, std::string_view own);

}  // namespace layercache::registry
