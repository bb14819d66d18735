// Registry token authentication: the parts that do no I/O. Thread-safe where noted.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace layercache::registry {

// Bearer tokens cached per (upstream, scope) until shortly before they expire.
// Thread-safe: shared by all worker threads.
class token_cache {
 public:
  using clock = std::chrono::steady_clock;
  token_cache() = default;
  // Tokens are used at most `longest` (access: client's anonymous tokens: a repository made
  // private is refused within access_ttl, not within the life of a token issued before).
  explicit token_cache(clock::duration longest) : longest_(longest) {}

  // The cached token, if any and not within `margin` of expiry.
  [[nodiscard]] std::optional<std::string> find(std::string_view upstream, std::string_view scope,
                                                clock::time_point now = clock::now());
  void store(std::string_view upstream, std::string_view scope, std::string token,
             std::chrono::seconds lifetime, clock::time_point now = clock::now());
  // Forget a token the upstream refused. With `token`, only if that is still the cached one
  // (another request may have stored a newer token meanwhile).
  void erase(std::string_view upstream, std::string_view scope);
  void erase(std::string_view upstream, std::string_view scope, std::string_view token);

 private:
  struct entry {
    std::string token;
    clock::time_point refresh_at;
  };
  std::optional<clock::duration> longest_;
  std::mutex mutex_;
  std::map<std::string, entry, std::less<>> entries_;
};

// How long a credential that lives `lifetime` is used before it is refreshed: 90% of its life,
// and at least 5 s before it expires — but never less than half its life, so that short-lived
// tokens are still reused for a while.
[[nodiscard]] std::chrono::seconds usable_lifetime(std::chrono::seconds lifetime);

struct token_response {
  std::string token;
  std::chrono::seconds expires_in{60};
};

// Parses a token endpoint's JSON ({"token": ..} or {"access_token": ..}, "expires_in").
// nullopt when there is no usable token.
[[nodiscard]] std::optional<token_response> parse_token_response(std::string_view json);

// The GCE metadata server's token JSON: {"access_token": .., "expires_in": .., "token_type":
// "Bearer"}. nullopt without a non-empty access_token or with a token_type other than Bearer.
[[nodiscard]] std::optional<token_response> parse_metadata_token(std::string_view json);

// Where a Bearer challenge's realm is: scheme ("http"/"https"), host (no brackets), port.
struct realm_location {
  std::string_view scheme;
  std::string_view host;
  std::uint16_t port = 0;
};

// Whether credentials configured for `u` may be sent to the token realm at `realm`. Never to
// an http realm of an https upstream. Then: the upstream's own host:port, always; with
// `auth.realm_hosts` set, a host listed there ("*.example.com" matches subdomains of
// example.com; "host:port" that port, a bare host the realm scheme's default port); otherwise
// (for DNS names) a host under the upstream's parent domain (registry-1.docker.io →
// auth.docker.io) on the upstream's port. IP-literal upstreams allow only themselves unless
// listed.
[[nodiscard]] bool realm_allowed(const config::upstream& u, const realm_location& realm);

// "repository:<name>:pull"
[[nodiscard]] std::string pull_scope(std::string_view repository);

// "Basic base64(user:password)"
[[nodiscard]] std::string basic_authorization(std::string_view user, std::string_view password);

// Credentials for one registry as a docker config.json gives them.
struct docker_auth_entry {
  std::string username;
  std::string password;
  std::string identity_token;  // an OAuth2 refresh token for the registry's token realm
};

// The parts of a docker config.json that say where credentials come from. Registry keys are
// normalised by docker_registry_key.
struct docker_config_file {
  std::map<std::string, docker_auth_entry, std::less<>> auths;
  std::map<std::string, std::string, std::less<>> cred_helpers;  // registry → helper name
  std::string creds_store;                                       // helper for all registries
};

// Parses config.json. nullopt with `error` set (never quoting a secret) when it is not JSON,
// not an object, or an entry is malformed (bad base64, no ':' in a decoded `auth`, a helper
// name that is not [A-Za-z0-9._-]+).
[[nodiscard]] std::optional<docker_config_file> parse_docker_config(std::string_view json,
                                                                    std::string& error);

// The key docker uses for a registry written as `text` ("https://host:port/v1/", "host"):
// lowercase host[:port], no scheme or path. Docker Hub's names (docker.io, index.docker.io,
// registry-1.docker.io) all become "index.docker.io".
[[nodiscard]] std::string docker_registry_key(std::string_view text);

// The server URL docker hands a credential helper for a registry key: the key itself, or
// "https://index.docker.io/v1/" for Docker Hub.
[[nodiscard]] std::string docker_helper_server_url(std::string_view key);

// Where the credentials for registry `key` come from, in docker's order: credHelpers[key],
// then credsStore, then auths[key].
struct docker_credential_plan {
  std::string helper;                      // non-empty: run docker-credential-<helper> get
  std::optional<docker_auth_entry> entry;  // else these (nullopt: no credentials)
};
[[nodiscard]] docker_credential_plan plan_docker_credentials(const docker_config_file& file,
                                                             std::string_view key);

// Parses a credential helper's `get` output: {"ServerURL": .., "Username": .., "Secret": ..}.
// A Username of "<token>" makes Secret an identity token. nullopt when malformed or when
// Secret is empty.
[[nodiscard]] std::optional<docker_auth_entry> parse_helper_output(std::string_view json);

// Standard base64 (with padding); nullopt when malformed.
[[nodiscard]] std::optional<std::string> base64_decode(std::string_view text);

}  // namespace layercache::registry
