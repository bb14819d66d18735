#include "tests/support/registry.hpp"

#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "tests/support/http_client.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

constexpr auto start_timeout = 15s;
constexpr auto ready_poll_interval = 20ms;
constexpr int port_attempts = 5;
constexpr auto tool_timeout = 30s;

// A YAML double-quoted scalar.
std::string yaml_quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

std::string random_hex(std::size_t bytes) {
  std::random_device rd;
  std::string out;
  static constexpr char digits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < bytes; ++i) {
    const auto v = rd() & 0xffu;
    out += digits[v >> 4];
    out += digits[v & 0xfu];
  }
  return out;
}

void run_tool(const std::vector<std::string>& argv, const std::filesystem::path& cwd_hint) {
  auto result = run_command(argv, tool_timeout);
  if (result.timed_out || result.exit_code != 0) {
    throw std::runtime_error(
        "command failed (" +
        (result.timed_out ? std::string("timed out") : "exit " + std::to_string(result.exit_code)) +
        ", in " + cwd_hint.string() + "): " + quote_command(argv) + "\n" + result.output);
  }
}

}  // namespace

tls_files make_test_certificates(const std::filesystem::path& dir) {
  tls_files f{(dir / "ca.pem").string(), (dir / "ca.key").string(), (dir / "server.pem").string(),
              (dir / "server.key").string()};
  const auto ca_cnf = dir / "ca.cnf";
  const auto server_cnf = dir / "server.cnf";
  const auto csr = (dir / "server.csr").string();
  write_file(ca_cnf,
             "[req]\n"
             "distinguished_name = dn\n"
             "x509_extensions = v3_ca\n"
             "prompt = no\n"
             "[dn]\n"
             "CN = layercache test CA\n"
             "[v3_ca]\n"
             "basicConstraints = critical,CA:TRUE\n"
             "keyUsage = critical,keyCertSign,cRLSign\n"
             "subjectKeyIdentifier = hash\n");
  write_file(server_cnf,
             "[req]\n"
             "distinguished_name = dn\n"
             "prompt = no\n"
             "[dn]\n"
             "CN = localhost\n"
             "[v3_server]\n"
             "basicConstraints = critical,CA:FALSE\n"
             "keyUsage = critical,digitalSignature,keyEncipherment\n"
             "extendedKeyUsage = serverAuth\n"
             "subjectAltName = IP:127.0.0.1,DNS:localhost\n"
             "subjectKeyIdentifier = hash\n"
             "authorityKeyIdentifier = keyid\n");
  // EC P-256 keys: generated in milliseconds, accepted by Go, OpenSSL and containerd alike.
  run_tool(
      {"openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", f.ca_key, "-out", f.ca_cert, "-days", "7", "-config", ca_cnf.string()},
      dir);
  run_tool({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", f.server_key, "-out", csr, "-config", server_cnf.string()},
           dir);
  run_tool({"openssl", "x509", "-req", "-in", csr, "-CA", f.ca_cert, "-CAkey", f.ca_key,
            "-set_serial", "0x" + random_hex(8), "-days", "7", "-out", f.server_cert, "-extfile",
            server_cnf.string(), "-extensions", "v3_server"},
           dir);
  return f;
}

registry_process::registry_process(registry_options options)
    : options_(std::move(options)), dir_(std::make_unique<temp_dir>("layercache-registry")) {
  if (options_.htpasswd && options_.token_auth) {
    throw std::invalid_argument("registry_options: htpasswd and token_auth exclude each other");
  }
  const auto& dir = dir_->path();
  config_file_ = dir / "config.yml";
  log_file_ = dir / "registry.log";
  if (options_.storage_dir.empty()) {
    std::filesystem::create_directories(dir / "storage");
    root_dir_ = (dir / "storage").string();
  } else {
    root_dir_ = options_.storage_dir.string();
  }
  if (options_.tls) {
    auto files = make_test_certificates(dir);
    ca_file_ = files.ca_cert;
    cert_file_ = files.server_cert;
    key_file_ = files.server_key;
  }
  if (options_.htpasswd) {
    const auto& [user, password] = *options_.htpasswd;
    auto result = run_command({"htpasswd", "-Bbn", user, password}, tool_timeout);
    if (result.timed_out || result.exit_code != 0) {
      throw std::runtime_error("htpasswd failed: " + result.output);
    }
    htpasswd_file_ = (dir / "htpasswd").string();
    write_file(htpasswd_file_, result.output, 0600);
  }

  std::string failures;
  for (int attempt = 0; attempt < port_attempts; ++attempt) {
    port_ = free_port();
    start_once();
    if (wait_ready()) return;
    const auto text = log();
    process_.reset();
    // Another process took the port between free_port() and the registry's bind: try again.
    if (text.find("address already in use") == std::string::npos) {
      throw std::runtime_error("docker-registry did not start (" + config_file_.string() +
                               "); log:\n" + text);
    }
    failures += text;
  }
  throw std::runtime_error("docker-registry found no free port after " +
                           std::to_string(port_attempts) + " attempts; logs:\n" + failures);
}

registry_process::~registry_process() = default;
registry_process::registry_process(registry_process&&) noexcept = default;
registry_process& registry_process::operator=(registry_process&&) noexcept = default;

std::string registry_process::url() const {
  return std::string(options_.tls ? "https://" : "http://") + host();
}

std::string registry_process::host() const { return "127.0.0.1:" + std::to_string(port_); }

std::size_t registry_process::blob_requests(std::initializer_list<std::string_view> methods) const {
  const std::string text = log();
  std::size_t count = 0;
  for (std::string_view method : methods) {
    const std::string start = "\"" + std::string(method) + " /v2/";
    for (auto at = text.find(start); at != std::string::npos; at = text.find(start, at + 1)) {
      const auto end = text.find(' ', at + start.size());
      const std::string_view path(
          text.data() + at + start.size(),
          (end == std::string::npos ? text.size() : end) - at - start.size());
      if (path.find("/blobs/sha256:") != std::string_view::npos) ++count;
    }
  }
  return count;
}

std::string registry_process::log() const {
  try {
    return read_file(log_file_);
  } catch (const std::exception&) {
    return {};
  }
}

bool registry_process::running() const { return process_ && process_->running(); }

void registry_process::stop() {
  if (process_) process_->stop();
  process_.reset();
}

void registry_process::restart() {
  stop();
  start_once();
  if (!wait_ready()) {
    auto text = log();
    process_.reset();
    throw std::runtime_error("docker-registry did not restart on port " + std::to_string(port_) +
                             "; log:\n" + text);
  }
}

void registry_process::write_config() const {
  std::ostringstream y;
  y << "version: 0.1\n"
    << "log:\n"
    << "  level: warn\n"
    << "  formatter: text\n"
    << "  accesslog:\n"
    << "    disabled: " << (options_.access_log ? "false" : "true") << "\n"
    << "storage:\n"
    << "  filesystem:\n"
    << "    rootdirectory: " << yaml_quoted(root_dir_) << "\n"
    << "  delete:\n"
    << "    enabled: true\n"
    << "  maintenance:\n"
    << "    uploadpurging:\n"
    << "      enabled: false\n"
    << "http:\n"
    << "  addr: " << yaml_quoted(host()) << "\n"
    << "  secret: " << yaml_quoted(random_hex(16)) << "\n";
  if (options_.tls) {
    y << "  tls:\n"
      << "    certificate: " << yaml_quoted(cert_file_) << "\n"
      << "    key: " << yaml_quoted(key_file_) << "\n";
  }
  if (options_.htpasswd) {
    y << "auth:\n"
      << "  htpasswd:\n"
      << "    realm: layercache-test\n"
      << "    path: " << yaml_quoted(htpasswd_file_) << "\n";
  }
  if (options_.token_auth) {
    const auto& t = *options_.token_auth;
    y << "auth:\n"
      << "  token:\n"
      << "    realm: " << yaml_quoted(t.realm) << "\n"
      << "    service: " << yaml_quoted(t.service) << "\n"
      << "    issuer: " << yaml_quoted(t.issuer) << "\n"
      << "    rootcertbundle: " << yaml_quoted(t.rootcertbundle) << "\n";
  }
  if (!options_.proxy_remote_url.empty()) {
    y << "proxy:\n"
      << "  remoteurl: " << yaml_quoted(options_.proxy_remote_url) << "\n";
  }
  if (!options_.manifest_urls_allow.empty()) {
    y << "validation:\n"
      << "  manifests:\n"
      << "    urls:\n"
      << "      allow:\n";
    for (const auto& pattern : options_.manifest_urls_allow) {
      y << "        - " << yaml_quoted(pattern) << "\n";
    }
  }
  if (!options_.redirect_base_url.empty()) {
    y << "middleware:\n"
      << "  storage:\n"
      << "    - name: redirect\n"
      << "      options:\n"
      << "        baseurl: " << yaml_quoted(options_.redirect_base_url) << "\n";
  }
  write_file(config_file_, y.str(), 0600);
}

void registry_process::start_once() {
  write_config();
  process_ = std::make_unique<child_process>(
      // setpriv --pdeathsig: the registry dies with the test process even when the test
      // crashes and never runs our destructor (no orphaned registries).
      std::vector<std::string>{"setpriv", "--pdeathsig", "KILL", "docker-registry", "serve",
                               config_file_.string()},
      log_file_);
}

bool registry_process::wait_ready() {
  http_client client(ca_file_);
  const auto deadline = clock::now() + start_timeout;
  const auto probe = url() + "/v2/";
  while (clock::now() < deadline) {
    if (!process_->running()) return false;
    try {
      auto res = client.request("GET", probe, {}, {}, 1s);
      if (res.status == 200 || res.status == 401) return true;
    } catch (const std::runtime_error&) {
      // not listening yet
    }
    std::this_thread::sleep_for(ready_poll_interval);
  }
  return false;
}

}  // namespace layercache::testing
