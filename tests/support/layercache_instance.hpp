// layercache itself, in-process on 127.0.0.1 with a free port, for integration and e2e tests.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "server/server.hpp"
#include "tests/support/process.hpp"

namespace layercache::testing {

// Starts a server from YAML text. The text may omit `server:`; then one plain listener on
// 127.0.0.1:0 with 2 threads is used. It may omit `cache:`; then the store lives in a temp
// dir owned by the instance. Throws what config loading or start-up throws.
class layercache_instance {
 public:
  explicit layercache_instance(std::string_view yaml);
  ~layercache_instance();
  layercache_instance(const layercache_instance&) = delete;
  layercache_instance& operator=(const layercache_instance&) = delete;

  [[nodiscard]] std::uint16_t port(std::size_t listener = 0) const;
  [[nodiscard]] std::string url(std::size_t listener = 0) const;  // http(s)://127.0.0.1:PORT
  [[nodiscard]] const config::config& settings() const { return cfg_; }
  // http://127.0.0.1:ADMIN_PORT (the operations listener; admin is on unless the YAML says no).
  [[nodiscard]] std::string admin_url() const;
  // The sum of the samples of `name` with all of `labels` in a scrape of /metrics now (0 when
  // none); -1 when the scrape fails.
  [[nodiscard]] double metric(std::string_view name,
                              const std::map<std::string, std::string>& labels = {}) const;
  server::server& srv() { return *server_; }
  void stop() { server_->stop(); }

 private:
  temp_dir cache_dir_;
  config::config cfg_;
  std::unique_ptr<server::server> server_;
};

// An `upstreams:` list entry, for building test configs.
[[nodiscard]] std::string upstream_yaml(std::string_view name, std::string_view url,
                                        bool is_default, std::string_view extra = {});

}  // namespace layercache::testing
