// Registry token authentication: the parts that do no I/O. Thread-safe where noted.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"

namespace layercache::server {

// Bearer tokens cached per (upstream, scope) until shortly before they expire.
// Thread-safe: shared by all worker threads.
class token_cache {
 public:
  using clock = std::chrono::steady_clock;

  // The cached token, if any and not within `margin` of expiry.
  [[nodiscard]] std::optional<std::string> find(std::string_view upstream, std::string_view scope,
                                                clock::time_point now = clock::now());
  void store(std::string_view upstream, std::string_view scope, std::string token,
             std::chrono::seconds lifetime, clock::time_point now = clock::now());
  // Forget a token the upstream refused.
  void erase(std::string_view upstream, std::string_view scope);

 private:
  struct entry {
    std::string token;
    clock::time_point refresh_at;
  };
  std::mutex mutex_;
  std::map<std::string, entry, std::less<>> entries_;
};

struct token_response {
  std::string token;
  std::chrono::seconds expires_in{60};
};

// Parses a token endpoint's JSON ({"token": ..} or {"access_token": ..}, "expires_in").
// nullopt when there is no usable token.
[[nodiscard]] std::optional<token_response> parse_token_response(std::string_view json);

// Whether credentials configured for `u` may be sent to a token realm on `realm_host`:
// the upstream's own host, or (for DNS names) a host under the upstream's parent domain
// (registry-1.docker.io → auth.docker.io). IP-literal upstreams allow only themselves.
[[nodiscard]] bool realm_host_allowed(const config::upstream& u, std::string_view realm_host);

// "repository:<name>:pull"
[[nodiscard]] std::string pull_scope(std::string_view repository);

// "Basic base64(user:password)"
[[nodiscard]] std::string basic_authorization(std::string_view user, std::string_view password);

}  // namespace layercache::server
