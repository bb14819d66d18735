// The handlers of the read API: each turns a request into an answer (server/answer.hpp) and
// never touches the client's connection. handle_request checks client credentials, the route,
// the method and the upstream, then hands the request to the manifest, blob or listing handler.
// Include only from server/*.cpp and their tests (brings in Asio and Beast).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <memory>
#include <string>
#include <vector>

#include "asio/names.hpp"
#include "oci/manifest.hpp"
#include "registry/upstream_client.hpp"
#include "server/answer.hpp"
#include "server/route.hpp"
#include "server/services.hpp"
#include "server/upstream_select.hpp"

namespace layercache::content {
class blob_source;
class manifest_cache;
}  // namespace layercache::content

namespace layercache::server {

// One routed request, as the handlers see it.
struct request_context {
  const request& req;
  exchange& record;                   // the handlers fill in source and blob report
  asio::any_io_executor executor;     // the session's: replays a manifest starts run there
  registry::upstream_client& client;  // of the chosen upstream, on this worker
  const upstream_choice& choice;
  const route& r;
  // upstream.access: client — the gate that admitted the request (learns what manifests list).
  access_gate* gate = nullptr;
  [[nodiscard]] bool head() const { return req.method() == http::verb::head; }
};

class blob_handler {
 public:
  virtual ~blob_handler() = default;
  // GET or HEAD of blob `rc.r.reference` (a digest).
  virtual asio::awaitable<answer> blob(const request_context& rc) = 0;
  // A manifest listing `blobs` is being sent through `client`: the client's reads of them
  // follow (their sizes spare each an upstream HEAD).
  virtual void listed(const registry::upstream_client& client,
                      const std::vector<oci::descriptor>& blobs) = 0;
};

class manifest_handler {
 public:
  virtual ~manifest_handler() = default;
  // GET or HEAD of manifest `rc.r.reference` (a tag or a digest), for a client that accepts
  // `accept` (every Accept header it sent, joined).
  virtual asio::awaitable<answer> manifest(const request_context& rc,
                                           const std::string& accept) = 0;
};

// Blobs through the chunk cache: sizes from the store or an upstream HEAD, bytes from stored
// chunks or shared fills, ranges answered exactly, whole reads checked against the digest.
[[nodiscard]] std::unique_ptr<blob_handler> cached_blobs(content::blob_source& source,
                                                         access_observer& observer,
                                                         metrics::registry& metrics);
// Blobs relayed from the upstream as it answers (cache.enabled: false); a whole body is
// checked against the digest on the way.
[[nodiscard]] std::unique_ptr<blob_handler> relayed_blobs(metrics::registry& metrics);

// Manifests through the manifest cache (tag records, TTLs, stale serving); see
// manifest_handler.cpp.
[[nodiscard]] std::unique_ptr<manifest_handler> cached_manifests(content::manifest_cache& cache,
                                                                 const config::config& cfg,
                                                                 access_observer& observer,
                                                                 blob_handler& blobs,
                                                                 metrics::registry& metrics);
// Manifests from the upstream every time (cache.enabled: false).
[[nodiscard]] std::unique_ptr<manifest_handler> relayed_manifests(const config::config& cfg,
                                                                  access_observer& observer,
                                                                  blob_handler& blobs,
                                                                  metrics::registry& metrics);

// Tag lists and referrers, relayed (paging links given back the client's prefix).
asio::awaitable<answer> listing(const request_context& rc, metrics::registry& metrics);

// The answer to `req` from a session on `ex`, with the upstream clients of its worker.
asio::awaitable<answer> handle_request(const services& s, upstream_clients& clients,
                                       access_gates& gates, const request& req, exchange& record,
                                       const asio::any_io_executor& ex);

// Shared by the handlers: the client's error for an upstream failure (logged), and an
// upstream's error answer passed on (its small OCI error body; never WWW-Authenticate).
[[nodiscard]] answer failure_answer(const registry::upstream_client& client,
                                    const registry::upstream_failure& f);
asio::awaitable<answer> forwarded_error(const request& req, registry::upstream_response& up);
// An upstream's answer relayed as it arrives; with `verify`, hashed on the way and cut before
// the last byte when it does not match.
[[nodiscard]] std::unique_ptr<body_source> relayed_body(
    std::unique_ptr<registry::upstream_response> up, std::optional<oci::digest> verify,
    metrics::registry& metrics);

}  // namespace layercache::server
