// Where an upstream's credentials come from (static Basic, the GCE metadata server, a docker
// config.json and its credential helpers), and the single-flight table that lets all worker
// threads share one fetch of a token.
//
// Threading: everything here is shared by all workers and thread-safe. Coroutines run on the
// calling worker's executor (which must be single-threaded, as a worker's io_context is) and
// never block it: HTTP is asynchronous, files and helper processes run on a source's own thread.
//
// Include only from server/*.cpp.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "asio/names.hpp"
#include "config/config.hpp"

namespace layercache::registry {

enum class upstream_errc {
  connect_failed,   // DNS, TCP or TLS handshake
  timeout,          // a deadline passed
  protocol,         // malformed response, connection lost mid-response
  auth_failed,      // credentials or a token could not be had (endpoint down, 5xx, nonsense)
  auth_denied,      // the token endpoint refused our credentials (401/403)
  realm_forbidden,  // a challenge named a token realm outside the upstream's hosts
  too_many_redirects,
  bad_redirect,      // unusable Location
  redirect_refused,  // a redirect layercache does not follow (which says nothing of where to)
};

struct upstream_failure {
  upstream_errc code = upstream_errc::protocol;
  std::string message;  // for logs; never carries credentials or signed query strings
  [[nodiscard]] unsigned http_status() const {
    switch (code) {
      case upstream_errc::timeout:
        return 504;
      case upstream_errc::auth_denied:
        return 401;
      default:
        return 502;
    }
  }
  // The OCI error code that goes with http_status().
  [[nodiscard]] const char* oci_code() const {
    return code == upstream_errc::auth_denied ? "UNAUTHORIZED" : "UNAVAILABLE";
  }
};

// What is presented to an upstream or its token realm. Never logged.
struct credentials {
  std::string username;  // HTTP Basic, with password
  std::string password;
  std::string identity_token;  // an OAuth2 refresh token for the token realm (docker)
  std::string access_token;    // usable directly as "Bearer" (GCE metadata server)

  [[nodiscard]] bool empty() const {
    return password.empty() && identity_token.empty() && access_token.empty();
  }
  [[nodiscard]] bool has_basic() const { return !username.empty() && !password.empty(); }
  friend bool operator==(const credentials&, const credentials&) = default;
};

using credential_result = std::variant<credentials, upstream_failure>;

// One upstream's source of credentials.
class credential_source {
 public:
  virtual ~credential_source() = default;
  // The credentials to present now: cached, or fetched (metadata server, helper) without
  // blocking the calling thread. Empty credentials: none are configured for this registry
  // (requests go anonymous). A failure when they cannot be had; it is logged here.
  virtual asio::awaitable<credential_result> get() = 0;
  // The upstream or its token realm refused `c`: hand them out no more (fetch again).
  virtual void refused(const credentials& c) = 0;
};

// A token (or access token) fetched once for everyone waiting on it, or why not.
using fetch_result = std::variant<std::string, upstream_failure>;

// At most one fetch per key in flight across all worker threads: the first caller leads (does
// the fetch), the others wait on a timer on their own executor until it finishes.
class flight_table {
  struct flight {
    std::uint64_t next_waiter = 0;
    std::map<std::uint64_t, std::function<void()>> waiters;  // wake-ups, by waiter id
    std::optional<fetch_result> result;
    bool done = false;
  };

 public:
  // The claim of the caller that fetches. finish() hands the result to every waiter; a lead
  // destroyed unfinished (coroutine cancelled) wakes them with nothing, so they retry.
  class lead {
   public:
    lead(flight_table* table, std::string key, std::shared_ptr<flight> f)
        : table_(table), key_(std::move(key)), flight_(std::move(f)) {}
    lead(lead&& other) noexcept
        : table_(std::exchange(other.table_, nullptr)),
          key_(std::move(other.key_)),
          flight_(std::move(other.flight_)) {}
    lead& operator=(lead&&) = delete;
    lead(const lead&) = delete;
    lead& operator=(const lead&) = delete;
    ~lead() { complete(std::nullopt); }
    void finish(fetch_result r) { complete(std::move(r)); }

   private:
    void complete(std::optional<fetch_result> r);
    flight_table* table_;
    std::string key_;
    std::shared_ptr<flight> flight_;
  };

  // A lead when no fetch for `key` is running. Otherwise waits for the running one: its
  // result, or nullopt when its leader gave up or `limit` passed first.
  asio::awaitable<std::variant<lead, std::optional<fetch_result>>> join(std::string key,
                                                                        config::duration limit);

  // Fetches in flight (for tests).
  [[nodiscard]] std::size_t size() const;

  // Callers waiting on the fetch for `key` (for tests).
  [[nodiscard]] std::size_t waiters(std::string_view key) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<flight>, std::less<>> flights_;
};

// What all workers share about one upstream's authentication.
class upstream_credentials {
 public:
  // Builds the source `u.auth` describes (none for anonymous). Logs a warning for a secret
  // file others may read. Throws std::runtime_error when the source cannot be set up.
  explicit upstream_credentials(const config::upstream& u);
  ~upstream_credentials();
  upstream_credentials(const upstream_credentials&) = delete;
  upstream_credentials& operator=(const upstream_credentials&) = delete;

  // nullptr: anonymous.
  [[nodiscard]] credential_source* source() const { return source_.get(); }
  // Registry token fetches in flight, keyed by scope.
  [[nodiscard]] flight_table& token_flights() { return token_flights_; }

 private:
  std::unique_ptr<credential_source> source_;
  flight_table token_flights_;
};

// Logs a warning when `path` may be read by its group or others (it holds a secret).
void warn_if_exposed(const std::string& path, std::string_view what);

// Output of a docker credential helper run.
struct helper_run {
  int exit_code = -1;  // -1: did not start or was killed
  bool timed_out = false;
  std::string output;  // stdout (at most 1 MiB)
  std::string error;   // why it did not run, or the first line of stderr
};

// Runs `program get` with `input` on stdin, blocking the calling thread (never an I/O
// thread) at most `timeout`; a helper still running then is killed.
[[nodiscard]] helper_run run_credential_helper(const std::string& program, const std::string& input,
                                               config::duration timeout);

// The path of docker-credential-<name> in `dir`, or found on PATH when `dir` is empty; empty
// when there is none that is executable.
[[nodiscard]] std::string find_credential_helper(const std::string& name, const std::string& dir);

}  // namespace layercache::registry
