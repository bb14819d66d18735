#include "tests/support/layercache_instance.hpp"

#include "tests/support/exposition.hpp"
#include "tests/support/http_client.hpp"

namespace layercache::testing {

layercache_instance::layercache_instance(std::string_view yaml) {
  std::string text(yaml);
  if (text.find("server:") == std::string::npos) {
    text = "server:\n  threads: 2\n  listen:\n    - address: 127.0.0.1:0\n" + text;
  }
  if (text.find("\nadmin:") == std::string::npos && !text.starts_with("admin:")) {
    if (!text.empty() && text.back() != '\n') text += '\n';
    text += "admin:\n  address: 127.0.0.1:0\n";
  }
  if (text.find("cache:") == std::string::npos) {
    text += "cache:\n  path: " + (cache_dir_.path() / "store").string() + "\n";
  }
  cfg_ = config::load_string(text, "<test config>");
  server_ = std::make_unique<server::server>(cfg_);
  server_->start();
}

layercache_instance::~layercache_instance() { server_->stop(); }

std::string layercache_instance::admin_url() const {
  return "http://127.0.0.1:" + std::to_string(server_->admin_port());
}

double layercache_instance::metric(std::string_view name,
                                   const std::map<std::string, std::string>& labels) const {
  http_client c;
  const auto r = c.get(admin_url() + "/metrics");
  if (r.status != 200) return -1;
  return metric_value(parse_exposition(r.body), name, labels);
}

std::uint16_t layercache_instance::port(std::size_t listener) const {
  return server_->ports().at(listener);
}

std::string layercache_instance::url(std::size_t listener) const {
  const bool tls = cfg_.server.listen.at(listener).tls.has_value();
  return std::string(tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port(listener));
}

std::string upstream_yaml(std::string_view name, std::string_view url, bool is_default,
                          std::string_view extra) {
  std::string out = "  - name: " + std::string(name) + "\n    url: " + std::string(url) + "\n";
  if (is_default) out += "    default: true\n";
  out += extra;
  return out;
}

}  // namespace layercache::testing
