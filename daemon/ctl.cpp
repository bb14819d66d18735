// layercachectl: the operator's client for a running layercached's admin API (plain HTTP on
// the operations listener, docs/operations.md).
#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "daemon/doctor.hpp"
#include "daemon/node_setup.hpp"
#include "log/log.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

constexpr std::string_view usage =
    "usage: layercachectl [--admin HOST:PORT] [--token-file FILE] [--timeout SECONDS] COMMAND\n"
    "\n"
    "  stats                          cache and server figures (JSON)\n"
    "  blobs [LIMIT]                  cached blobs, most recently used first\n"
    "  purge DIGEST | purge --all     drop one blob's chunks, or every blob's\n"
    "  preload REFERENCE [PLATFORM]   fetch an image's manifest and every blob, verified\n"
    "  preload --start REFERENCE [PLATFORM]\n"
    "                                 resolve the image now and begin fetching what a start of\n"
    "                                 it reads (its access profile); answers at once\n"
    "  profiles                       access profiles in the store\n"
    "  profile export DIGEST [FILE]   write a manifest's profile (stdout without FILE)\n"
    "  profile import DIGEST FILE     store FILE as the manifest's profile ('-': stdin)\n"
    "  profile delete DIGEST          drop a profile\n"
    "  node setup --containerd|--docker [--config FILE | --upstreams HOST,...] [--mirror URL]\n"
    "             [--dry-run] [--root DIR] [--containerd-hosts-dir DIR]\n"
    "             [--docker-daemon-json FILE]\n"
    "                                 point the node's runtimes at layercache (both flags: both):\n"
    "                                 containerd: <hosts dir>/<registry>/hosts.toml for every\n"
    "                                 registry of the config's upstreams (default hosts dir:\n"
    "                                 containerd's config_path, else /etc/containerd/certs.d);\n"
    "                                 dockerd: \"registry-mirrors\" in /etc/docker/daemon.json.\n"
    "                                 Merges with what is there, backs a changed file up once to\n"
    "                                 FILE.layercache-backup; a second run changes nothing.\n"
    "                                 --config defaults to /etc/layercache/layercache.yaml, the\n"
    "                                 mirror to its first listener; --dry-run shows the changes\n"
    "  doctor [--containerd] [--docker] [--config FILE | --upstreams HOST,...] [--mirror URL]\n"
    "         [--root DIR] [--containerd-hosts-dir DIR] [--docker-daemon-json FILE] [--no-probe]\n"
    "                                 what the runtimes on this node miss to pull through\n"
    "                                 layercache: those named, else each one installed (dockerd:\n"
    "                                 daemon.json or docker.sock; containerd: config.toml or its\n"
    "                                 socket), the hosts.toml of every registry node setup writes\n"
    "                                 (the config's, default /etc/layercache/layercache.yaml if\n"
    "                                 there, else docker.io's; mirror http://127.0.0.1:5000),\n"
    "                                 and on a lazy node containerd's stargz proxy plugin,\n"
    "                                 layercache-stargz (socket, -mirror flags) and /dev/fuse;\n"
    "                                 --no-probe reads files only. --root DIR: the default\n"
    "                                 /etc and /run paths under DIR (tests, a host mounted in a\n"
    "                                 container)\n"
    "\n"
    "--admin defaults to $LAYERCACHE_ADMIN, else 127.0.0.1:9401. --token-file (or\n"
    "$LAYERCACHE_ADMIN_TOKEN_FILE) holds the admin bearer token when admin.token_file is set.\n"
    "Exit status: 0 on a 2xx answer, 1 on any other answer (its body on stderr), 2 on usage or\n"
    "connection errors. doctor: 1 when something is missing; node setup: 1 when a file was\n"
    "refused (not readable as TOML/JSON: left as it was) or could not be written.\n";

struct options {
  std::string host = "127.0.0.1";
  std::string port = "9401";
  std::string token;
  std::chrono::seconds timeout{600};
};

struct answer {
  unsigned status = 0;
  std::string body;
};

// "host:port" or "[v6]:port", optionally prefixed with http://.
bool parse_admin(std::string_view text, options& o) {
  if (text.starts_with("http://")) text.remove_prefix(7);
  while (text.ends_with('/')) text.remove_suffix(1);
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) return false;
  std::string_view host = text.substr(0, colon);
  if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);
  if (host.empty()) return false;
  o.host = std::string(host);
  o.port = std::string(text.substr(colon + 1));
  return true;
}

std::optional<std::string> read_all(const std::string& path) {
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  return layercache::doctor::read_text(path);
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// "host:port", brackets around an IPv6 host.
std::string where(const options& o) {
  const bool v6 = o.host.find(':') != std::string::npos;
  return (v6 ? "[" + o.host + "]" : o.host) + ":" + o.port;
}

// One request, one answer. Throws std::runtime_error with a plain message ("cannot connect to
// 127.0.0.1:9401: Connection refused"): never Boost's what(), which names its source files.
answer call(const options& o, http::verb method, const std::string& target, std::string body) {
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  beast::error_code ec;
  const auto endpoints = resolver.resolve(o.host, o.port, ec);
  if (ec) throw std::runtime_error("cannot resolve " + where(o) + ": " + ec.message());
  stream.expires_after(o.timeout);
  stream.connect(endpoints, ec);
  if (ec) throw std::runtime_error("cannot connect to " + where(o) + ": " + ec.message());
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, where(o));
  req.set(http::field::user_agent, "layercachectl");
  if (!o.token.empty()) req.set(http::field::authorization, "Bearer " + o.token);
  // Every state-changing call says JSON (the admin API refuses those that do not).
  if (!body.empty() || method != http::verb::get) {
    req.set(http::field::content_type, "application/json");
  }
  req.body() = std::move(body);
  req.prepare_payload();
  req.keep_alive(false);
  http::write(stream, req, ec);
  if (ec) throw std::runtime_error("sending to " + where(o) + ": " + ec.message());
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::uint64_t{256} * 1024 * 1024);
  http::read(stream, buffer, parser, ec);
  if (ec) throw std::runtime_error("no answer from " + where(o) + ": " + ec.message());
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  return answer{parser.get().result_int(), parser.get().body()};
}

// A digest as the admin API takes it; exits on anything else.
// `preload [--start] REFERENCE [PLATFORM]`
bool preload_args(const std::vector<std::string>& args) {
  const std::size_t first = args.size() > 1 && args[1] == "--start" ? 2 : 1;
  return args.size() == first + 1 || args.size() == first + 2;
}

std::string digest_arg(const std::vector<std::string>& args, std::size_t i) {
  if (i >= args.size()) {
    std::cerr << "layercachectl: a digest (sha256:<hex>) is required\n" << usage;
    std::exit(2);  // NOLINT(concurrency-mt-unsafe): layercachectl has one thread
  }
  const std::string& d = args[i];
  const auto colon = d.find(':');
  if (colon == std::string::npos || colon == 0 || d.find('/') != std::string::npos ||
      d.find('?') != std::string::npos) {
    std::cerr << "layercachectl: not a digest: " << d << "\n";
    std::exit(2);  // NOLINT(concurrency-mt-unsafe): layercachectl has one thread
  }
  return d;
}

// The flags `node setup` and `doctor` share.
struct node_flags {
  std::string config;     // --config; empty: <root>/etc/layercache/layercache.yaml
  std::string upstreams;  // --upstreams HOST,...
  std::string mirror;     // --mirror
  bool containerd = false;
  bool docker = false;
  bool dry_run = false;
  bool probe = true;
  std::filesystem::path root = "/";
  std::optional<std::filesystem::path> hosts_dir;
  std::optional<std::filesystem::path> daemon_json;
};

// args[first...] into `f`; `setup` takes --dry-run, doctor --no-probe. False (said) on others.
bool parse_node_flags(const std::vector<std::string>& args, std::size_t first, bool setup,
                      node_flags& f) {
  for (std::size_t i = first; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool value = i + 1 < args.size();
    if (a == "--containerd") {
      f.containerd = true;
    } else if (a == "--docker") {
      f.docker = true;
    } else if (a == "--dry-run" && setup) {
      f.dry_run = true;
    } else if (a == "--no-probe" && !setup) {
      f.probe = false;
    } else if (a == "--config" && value) {
      f.config = args[++i];
    } else if (a == "--upstreams" && value) {
      f.upstreams = args[++i];
    } else if (a == "--mirror" && value) {
      f.mirror = args[++i];
    } else if (a == "--root" && value) {
      f.root = args[++i];
    } else if (a == "--containerd-hosts-dir" && value) {
      f.hosts_dir = args[++i];
    } else if (a == "--docker-daemon-json" && value) {
      f.daemon_json = args[++i];
    } else {
      std::cerr << "layercachectl: unknown or incomplete " << (setup ? "node setup" : "doctor")
                << " argument " << a << "\n"
                << usage;
      return false;
    }
  }
  if (!f.config.empty() && !f.upstreams.empty()) {
    std::cerr << "layercachectl: --config and --upstreams exclude each other\n";
    return false;
  }
  return true;
}

// What the node is pointed at: the registries and layercache's address.
struct node_target {
  std::vector<layercache::node_setup::registry_host> registries;
  std::string mirror;
  std::optional<bool> default_is_docker_hub;
};

bool is_docker_hub(const layercache::config::upstream& u) {
  using layercache::node_setup::containerd_name;
  if (containerd_name(u.host) == "docker.io" || containerd_name(u.name) == "docker.io") {
    return true;
  }
  return std::any_of(u.aliases.begin(), u.aliases.end(),
                     [](const std::string& a) { return containerd_name(a) == "docker.io"; });
}

// From --upstreams, or the config file (a missing default one is docker.io's for doctor,
// `config_required` false); --mirror over the config's listener. nullopt once said why not.
std::optional<node_target> resolve_target(const node_flags& f, bool config_required) {
  namespace ns = layercache::node_setup;
  namespace cfg = layercache::config;
  node_target t;
  const std::string path =
      f.config.empty() ? (f.root / "etc/layercache/layercache.yaml").string() : f.config;
  // doctor without --config: the node's config when there is one it can read (run as a user,
  // its token files may not be), else docker.io's.
  const bool optional = f.config.empty() && !config_required;
  std::error_code ec;
  bool from_list = !f.upstreams.empty() || (optional && !std::filesystem::exists(path, ec));
  if (!from_list) {
    try {
      const auto c = cfg::load_file(path);
      t.registries = ns::registry_hosts(c);
      t.mirror = ns::mirror_url(c);
      const auto* d = c.default_upstream();
      t.default_is_docker_hub = d != nullptr && is_docker_hub(*d);
    } catch (const std::exception& e) {
      std::cerr << "layercachectl: " << e.what() << "\n";
      if (!optional) {
        std::cerr << "(the layercached config: --config FILE; or name the registries with "
                     "--upstreams HOST,...)\n";
        return std::nullopt;
      }
      std::cerr << "layercachectl: checking docker.io only (--config FILE to name another)\n";
      from_list = true;
    }
  }
  if (from_list) {
    std::vector<std::string> hosts;
    std::istringstream list(f.upstreams.empty() ? std::string("docker.io") : f.upstreams);
    for (std::string h; std::getline(list, h, ',');) {
      if (!h.empty()) hosts.push_back(h);
    }
    t.registries = ns::registry_hosts(hosts);
    t.mirror = ns::mirror_url(cfg::load_string(cfg::default_yaml(), "the default config"));
  }
  if (!f.mirror.empty()) {
    const auto m = ns::parse_mirror(f.mirror);
    if (!m) {
      std::cerr << "layercachectl: --mirror " << f.mirror
                << " is not http(s)://HOST[:PORT] (no path)\n";
      return std::nullopt;
    }
    t.mirror = *m;
  }
  return t;
}

int node_setup_command(const std::vector<std::string>& args) {
  node_flags f;
  if (!parse_node_flags(args, 2, true, f)) return 2;
  if (!f.containerd && !f.docker) {
    std::cerr << "layercachectl: node setup needs --containerd, --docker or both\n" << usage;
    return 2;
  }
  const auto t = resolve_target(f, true);
  if (!t) return 2;
  layercache::node_setup::options o;
  o.containerd = f.containerd;
  o.docker = f.docker;
  o.dry_run = f.dry_run;
  o.root = f.root;
  o.hosts_dir = f.hosts_dir;
  o.daemon_json = f.daemon_json;
  o.registries = t->registries;
  o.mirror = t->mirror;
  o.default_is_docker_hub = t->default_is_docker_hub;
  std::cout << "layercache node setup: mirror " << o.mirror << ", registries";
  for (const auto& r : o.registries) std::cout << " " << r.name;
  std::cout << (o.dry_run ? " (dry run: nothing is written)\n" : "\n");
  return layercache::node_setup::apply(o, std::cout, std::cerr);
}

int doctor_command(const std::vector<std::string>& args) {
  node_flags f;
  if (!parse_node_flags(args, 1, false, f)) return 2;
  const auto t = resolve_target(f, false);
  if (!t) return 2;
  layercache::doctor::options d;
  d.root = f.root;
  d.mirror = t->mirror;
  d.probe_sockets = f.probe;
  d.containerd = f.containerd;
  d.docker = f.docker;
  d.hosts_dir = f.hosts_dir;
  d.daemon_json = f.daemon_json;
  d.registries.clear();
  for (const auto& r : t->registries) d.registries.push_back(r.name);
  std::function<std::optional<unsigned>(const std::string&)> get;
  options target;
  if (f.probe && d.mirror.starts_with("http://") && parse_admin(d.mirror, target)) {
    target.timeout = std::chrono::seconds(5);
    get = [&target](const std::string&) -> std::optional<unsigned> {
      try {
        return call(target, http::verb::get, "/v2/", {}).status;
      } catch (const std::exception&) {
        return std::nullopt;
      }
    };
  }
  return layercache::doctor::run(d, std::cout, get);
}

// stats, blobs, purge, preload, profiles, profile ...: one admin API call.
int admin_command(const options& o, const std::vector<std::string>& args) {
  http::verb method = http::verb::get;
  std::string target;
  std::string body;
  std::string output_file;
  const std::string& cmd = args[0];
  if (cmd == "stats" && args.size() == 1) {
    target = "/admin/stats";
  } else if (cmd == "blobs" && args.size() <= 2) {
    target = "/admin/blobs";
    if (args.size() == 2) target += "?limit=" + args[1];
  } else if (cmd == "purge" && args.size() == 2) {
    method = http::verb::delete_;
    target = args[1] == "--all" ? "/admin/blobs" : "/admin/blobs/" + digest_arg(args, 1);
  } else if (cmd == "preload" && preload_args(args)) {
    const bool start = args[1] == "--start";
    const std::size_t ref = start ? 2 : 1;
    method = http::verb::post;
    target = "/admin/preload";
    body = "{\"reference\":" + layercache::log::json_string(args[ref]);
    if (args.size() == ref + 2) {
      body += ",\"platform\":" + layercache::log::json_string(args[ref + 1]);
    }
    if (start) body += ",\"what\":\"start\"";
    body += "}";
  } else if (cmd == "profiles" && args.size() == 1) {
    target = "/admin/profiles";
  } else if (cmd == "profile" && args.size() >= 3 && args[1] == "export" && args.size() <= 4) {
    target = "/admin/profiles/" + digest_arg(args, 2);
    if (args.size() == 4) output_file = args[3];
  } else if (cmd == "profile" && args.size() == 4 && args[1] == "import") {
    method = http::verb::put;
    target = "/admin/profiles/" + digest_arg(args, 2);
    auto text = read_all(args[3]);
    if (!text) {
      std::cerr << "layercachectl: cannot read " << args[3] << "\n";
      return 2;
    }
    body = std::move(*text);
  } else if (cmd == "profile" && args.size() == 3 && args[1] == "delete") {
    method = http::verb::delete_;
    target = "/admin/profiles/" + digest_arg(args, 2);
  } else {
    std::cerr << "layercachectl: unknown command or wrong arguments\n" << usage;
    return 2;
  }

  answer a;
  try {
    a = call(o, method, target, std::move(body));
  } catch (const std::exception& e) {
    std::cerr << "layercachectl: " << e.what() << "\n";
    return 2;
  }
  if (a.status < 200 || a.status >= 300) {
    std::cerr << "layercachectl: " << a.status << " " << trimmed(a.body) << "\n";
    return 1;
  }
  if (!output_file.empty()) {
    std::ofstream out(output_file, std::ios::binary | std::ios::trunc);
    out << a.body;
    if (!out) {
      std::cerr << "layercachectl: cannot write " << output_file << "\n";
      return 2;
    }
    return 0;
  }
  std::cout << a.body;
  if (!a.body.empty() && a.body.back() != '\n') std::cout << '\n';
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): layercachectl has one thread
  if (const char* env = std::getenv("LAYERCACHE_ADMIN"); env != nullptr && *env != '\0') {
    if (!parse_admin(env, o)) {
      std::cerr << "layercachectl: bad LAYERCACHE_ADMIN: " << env << "\n";
      return 2;
    }
  }
  std::string token_file;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): layercachectl has one thread
  if (const char* env = std::getenv("LAYERCACHE_ADMIN_TOKEN_FILE"); env != nullptr) {
    token_file = env;
  }
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--admin" && i + 1 < argc) {
      if (!parse_admin(argv[++i], o)) {
        std::cerr << "layercachectl: bad --admin address: " << argv[i] << "\n";
        return 2;
      }
    } else if (a == "--token-file" && i + 1 < argc) {
      token_file = argv[++i];
    } else if (a == "--timeout" && i + 1 < argc) {
      o.timeout = std::chrono::seconds(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    } else {
      args.emplace_back(a);
    }
  }
  if (!token_file.empty()) {
    auto token = read_all(token_file);
    if (!token) {
      std::cerr << "layercachectl: cannot read token file " << token_file << "\n";
      return 2;
    }
    o.token = trimmed(std::move(*token));
  }
  if (args.empty()) {
    std::cerr << usage;
    return 2;
  }

  if (args[0] == "doctor") return doctor_command(args);
  if (args[0] == "node" && args.size() >= 2 && args[1] == "setup") return node_setup_command(args);

  return admin_command(o, args);
}
