// upstream.access: client — cached bytes only for clients the registry would let in.
//
// On a shared node each client presents its own credentials for the upstream (a token from
// the upstream's realm, or Basic for a Basic-auth upstream). Before any manifest or blob of a
// repository is served, the upstream is asked whether those credentials may pull it (a HEAD of
// what was asked for, with the client's Authorization); its yes is trusted for the upstream's
// access_ttl, never beyond a token's own expiry. A repository an anonymous token can pull is
// public: served without a check per client. A blob or manifest by digest is served under a
// repository only where the upstream has it under that repository: confirmed by a HEAD there
// (or, for a manifest, the digest a tag of it resolved to), once per access_ttl.
//
// What serves an admitted request: for a public repository an anonymous client; with node
// credentials configured, the node's client (they fill for everyone); otherwise a client that
// presents this client's credentials and nothing else (registry::upstream_client::present),
// held by the fills it starts. Credentials live in memory only, keyed by their SHA-256.
//
// Include only from server/*.cpp (brings in Beast).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "config/config.hpp"
#include "oci/digest.hpp"
#include "oci/manifest.hpp"
#include "registry/auth.hpp"
#include "registry/credentials.hpp"
#include "registry/upstream_client.hpp"
#include "server/answer.hpp"
#include "server/route.hpp"

namespace layercache::server {

// What the upstream said of credentials and repositories, each until its deadline. At most
// `capacity` entries of each kind (expired ones are dropped first, then all). Thread-safe:
// one per upstream, shared by the workers.
class access_book {
 public:
  using clock = std::chrono::steady_clock;
  explicit access_book(std::size_t capacity = 1 << 16) : capacity_(capacity) {}

  // Credentials `credential` (credential_key; "" for none) may pull `repository`.
  [[nodiscard]] bool allowed(std::string_view credential, std::string_view repository,
                             clock::time_point now = clock::now());
  void allow(std::string_view credential, std::string_view repository, clock::time_point until,
             clock::time_point now = clock::now());
  // The upstream has blob or manifest `d` under `repository`.
  [[nodiscard]] bool member(std::string_view repository, const oci::digest& d,
                            clock::time_point now = clock::now());
  void learn(std::string_view repository, const oci::digest& d, clock::time_point until,
             clock::time_point now = clock::now());

 private:
  using table = std::map<std::string, clock::time_point, std::less<>>;
  bool find(table& t, const std::string& key, clock::time_point now);
  void put(table& t, std::string key, clock::time_point until, clock::time_point now);

  std::size_t capacity_;
  std::mutex mutex_;
  table allowed_;  // credential, repository (joined)
  table members_;  // repository, digest (joined)
};

// The key credentials are remembered by: the SHA-256 (hex) of the Authorization value; ""
// for none.
[[nodiscard]] std::string credential_key(std::string_view authorization);

// When a Bearer JWT expires (its "exp" claim); nullopt for anything else. The signature is not
// checked: the upstream does that, and the expiry only shortens how long its answer is used.
[[nodiscard]] std::optional<std::chrono::system_clock::time_point> bearer_expiry(
    std::string_view authorization);

// How long a check made now is trusted: `ttl`, cut to the token's expiry when it has one (zero
// when that has passed).
[[nodiscard]] std::chrono::steady_clock::duration trusted_for(
    std::string_view authorization, config::duration ttl,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

// What one upstream's gates share: the book, and what their anonymous clients need (their own
// token cache: an anonymous token is never the node's).
struct access_parts {
  explicit access_parts(const config::upstream& u);
  config::upstream anonymous;  // the upstream, without credentials
  registry::upstream_credentials none;
  registry::token_cache tokens;
  registry::redirect_memory redirects;
  access_book book;
};

// The gate of one upstream on one worker: every access: client upstream has one, and so does
// every access: node upstream when some upstream is access: client (the store is shared: what
// a client-access upstream filled must not leave through a node-access one whose registry does
// not hold it under the repository asked). Used only from that worker's thread.
class access_gate {
 public:
  struct client_parts {
    registry::connection_pool& pool;
    asio::ssl::context* tls = nullptr;
    const net::own_endpoints* own = nullptr;
    metrics::upstream_metrics* metrics = nullptr;
  };
  access_gate(const config::upstream& u, access_parts& shared, registry::upstream_client& node,
              client_parts parts);

  // Who serves `req` (route `r`, `repository` at the upstream): the client, held for as long
  // as it is used when it is shared.
  struct admitted {
    registry::upstream_client* client = nullptr;
    std::shared_ptr<registry::upstream_client> keep;
    std::optional<std::uint64_t> blob_size;  // a blob's, when the check learnt it
  };
  using verdict = std::variant<admitted, answer>;
  asio::awaitable<verdict> admit(const request& req, const route& r, const std::string& repository);

  // GET /v2/ without credentials: the upstream's own challenge (401), so that clients that ask
  // it first (dockerd, skopeo) learn where to get a token.
  asio::awaitable<answer> challenge();

  // The upstream resolved a tag of `repository` to manifest `d`: it has `d` there. (What a
  // manifest lists is never taken as the repository's: a registry need not check that a
  // manifest's blobs are in its repository — foreign layers, registries that do not validate —
  // so a blob is a repository's only on a HEAD there.)
  void learn(const std::string& repository, const oci::digest& d);

 private:
  struct held {
    std::shared_ptr<registry::upstream_client> client;
    std::chrono::steady_clock::time_point used;
  };
  // admit() for an access: node upstream beside access: client ones: the node's client, and a
  // digest only where the upstream has it (the store holds what the others filled).
  asio::awaitable<verdict> admit_node(const request& req, const route& r,
                                      const std::string& repository);
  // The client presenting `authorization` (made on first use; at most max_presented kept).
  std::shared_ptr<registry::upstream_client> presenting(const std::string& key,
                                                        const std::string& authorization);
  // Asks the upstream through `client` for what `r` names; an answer to pass on when it is
  // not a yes.
  asio::awaitable<std::optional<answer>> check(registry::upstream_client& client,
                                               const request& req, const route& r,
                                               const std::string& repository,
                                               std::optional<std::uint64_t>* size);
  // The answer for a client without credentials, when the anonymous check said no (`refusal`).
  asio::awaitable<answer> unauthenticated(const request& req, const route& r,
                                          const std::string& repository, answer refusal);
  admitted serving(const std::string& repository, std::shared_ptr<registry::upstream_client> own);

  const config::upstream& cfg_;
  access_parts& shared_;
  registry::upstream_client& node_;
  client_parts parts_;
  std::unique_ptr<registry::upstream_client> anonymous_;  // anonymous tokens, own cache
  std::shared_ptr<registry::upstream_client> bare_;       // sends no credentials at all
  std::map<std::string, held, std::less<>> presented_;    // by credential_key
};

// The gates of one worker, by upstream name (only access: client upstreams have one).
using access_gates = std::map<std::string, std::unique_ptr<access_gate>, std::less<>>;

}  // namespace layercache::server
