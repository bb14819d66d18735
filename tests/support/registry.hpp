// A real docker-registry (distribution 2.8) on 127.0.0.1, for integration and end-to-end tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/process.hpp"

namespace layercache::testing {

struct registry_options {
  bool tls = false;  // serve HTTPS with a certificate from a CA generated for this registry
  // user, password: require HTTP Basic (htpasswd, bcrypt) on every /v2/ request.
  std::optional<std::pair<std::string, std::string>> htpasswd;
  // Non-empty: blob GET/HEAD answer 307 to <scheme://host:port of this URL> + the storage path
  // (e.g. /docker/registry/v2/blobs/sha256/ab/<hex>/data). distribution 2.8 ignores any path
  // in the URL. Point a file_server rooted at root_dir() here.
  std::string redirect_base_url;
  // Non-empty: use this directory as the filesystem storage root (it must exist and outlive the
  // registry) instead of one inside the registry's own temp dir. Lets a file_server be started
  // on the storage root before the registry that redirects to it.
  std::filesystem::path storage_dir;
  bool access_log = false;  // also log every request to the log file
  // Set: `auth: token` — every /v2/ request needs a Bearer JWT from `realm` (see
  // tests/support/token_issuer.hpp), signed by the certificate in `rootcertbundle`.
  struct token_auth_options {
    std::string realm;
    std::string service;
    std::string issuer;
    std::string rootcertbundle;
  };
  std::optional<token_auth_options> token_auth;
  // Non-empty: a pull-through cache of this registry (`proxy: remoteurl:`), as a mirror.
  std::string proxy_remote_url;
  // Regular expressions of the layer `urls` a pushed manifest may carry
  // (validation.manifests.urls.allow). Empty: manifests with `urls` are refused. A layer with
  // allowed urls need not be in the repository (a non-distributable layer).
  std::vector<std::string> manifest_urls_allow;
};

// Starts `docker-registry serve` with a generated config on a free port and waits (at most
// 15 s) until GET /v2/ answers 200 or 401; retries with another port if the port was taken.
// Throws std::runtime_error with the registry's log when it cannot start. Stops (SIGTERM) on
// destruction and removes its temp dir. Movable, not copyable; not thread-safe.
class registry_process {
 public:
  explicit registry_process(registry_options options = {});
  ~registry_process();
  registry_process(registry_process&&) noexcept;
  registry_process& operator=(registry_process&&) noexcept;
  registry_process(const registry_process&) = delete;
  registry_process& operator=(const registry_process&) = delete;

  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string url() const;   // http(s)://127.0.0.1:PORT
  [[nodiscard]] std::string host() const;  // 127.0.0.1:PORT
  // PEM file of the CA that signed the server certificate; empty unless options.tls.
  [[nodiscard]] const std::string& ca_file() const { return ca_file_; }
  // Filesystem storage root (blobs live under docker/registry/v2/blobs/...).
  [[nodiscard]] const std::string& root_dir() const { return root_dir_; }
  [[nodiscard]] const std::filesystem::path& config_file() const { return config_file_; }
  [[nodiscard]] const registry_options& options() const { return options_; }
  [[nodiscard]] std::string log() const;
  // Blob requests (to /v2/<name>/blobs/sha256:…, not uploads) with one of `methods` that the
  // registry answered so far, from its access log (registry_options::access_log).
  [[nodiscard]] std::size_t blob_requests(std::initializer_list<std::string_view> methods = {
                                              "GET"}) const;

  [[nodiscard]] bool running() const;
  // Stops the registry (an upstream outage for the code under test); storage is kept.
  void stop();
  // Starts it again on the same port with the same storage, waiting until it answers.
  void restart();

 private:
  void write_config() const;
  void start_once();
  bool wait_ready();

  registry_options options_;
  std::unique_ptr<temp_dir> dir_;
  std::filesystem::path config_file_;
  std::filesystem::path log_file_;
  std::string ca_file_;
  std::string cert_file_;
  std::string key_file_;
  std::string htpasswd_file_;
  std::string root_dir_;
  std::uint16_t port_ = 0;
  std::unique_ptr<child_process> process_;
};

// Writes a CA and a server certificate for IP:127.0.0.1 and DNS:localhost into `dir` with the
// openssl CLI: ca.pem, server.pem (leaf only), server.key. Throws with openssl's output.
struct tls_files {
  std::string ca_cert;
  std::string ca_key;
  std::string server_cert;
  std::string server_key;
};
tls_files make_test_certificates(const std::filesystem::path& dir);

}  // namespace layercache::testing
