// layercachectl: the operator's client for a running layercached's admin API (plain HTTP on
// the operations listener, docs/operations.md).
#include <algorithm>
#include <boost/beast/http/verb.hpp>
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
#include "daemon/ctl_client.hpp"
#include "daemon/ctl_image.hpp"
#include "daemon/doctor.hpp"
#include "daemon/node_setup.hpp"
#include "log/log.hpp"

namespace {

namespace http = boost::beast::http;

constexpr std::string_view usage =
    "usage: layercachectl [--admin HOST:PORT] [--token-file FILE] [--timeout SECONDS] COMMAND\n"
    "\n"
    "  stats                          cache and server figures (JSON)\n"
    "  blobs [LIMIT]                  cached blobs, most recently used first\n"
    "  purge DIGEST | purge --all     drop one blob's chunks, or every blob's\n"
    "  preload [--upstream NAME] [--platform OS/ARCH[/VARIANT]|all] REFERENCE\n"
    "                                 fetch an image's manifest and every blob, verified;\n"
    "                                 progress (blobs, bytes) on stderr, the result (JSON) on\n"
    "                                 stdout. A REFERENCE without a registry host (team/app:v1,\n"
    "                                 alpine) goes to the default upstream, one with a host to\n"
    "                                 that upstream; --upstream names one (name, alias or host).\n"
    "                                 --platform defaults to this host's (linux/<uname arch>);\n"
    "                                 a second positional PLATFORM is the same as --platform.\n"
    "                                 --timeout: how long it may go without progress\n"
    "  preload --start [--upstream NAME] [--platform P] REFERENCE\n"
    "                                 resolve the image now and begin fetching what a start of\n"
    "                                 it reads (its access profile); answers at once\n"
    "  profiles                       access profiles in the store\n"
    "  profile export [--upstream NAME] [--platform P] IMAGE|DIGEST [FILE]\n"
    "                                 write a manifest's profile (stdout without FILE); an IMAGE\n"
    "                                 reference (tag or digest) is resolved by layercached to\n"
    "                                 its platform manifest's digest first\n"
    "  profile import [DIGEST] FILE   store FILE as the manifest's profile ('-': stdin); without\n"
    "                                 DIGEST, the manifest the document names\n"
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
    "Exit status: 0 on a 2xx answer, 1 on any other answer (its error on stderr), 2 on usage or\n"
    "connection errors. doctor: 1 when something is missing; node setup: 1 when a file was\n"
    "refused (not readable as TOML/JSON: left as it was) or could not be written.\n";

using layercache::ctl::answer;
using layercache::ctl::call;
using layercache::ctl::options;
using layercache::ctl::parse_admin;

std::optional<std::string> read_all(const std::string& path) {
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  return layercache::doctor::read_text(path);
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// A digest as the admin API takes it; exits on anything else.
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
  std::vector<layercache::doctor::chain> chains;  // upstreams with mirrors
};

std::vector<layercache::doctor::chain> chains_of(const layercache::config::config& c) {
  std::vector<layercache::doctor::chain> out;
  for (const auto& u : c.upstreams) {
    if (u.mirrors.empty()) continue;
    layercache::doctor::chain ch{
        u.name,
        u.url,
        u.mirror_select == layercache::config::mirror_selection::hash ? "hash" : "ordered",
        {}};
    for (const auto& m : u.mirrors) ch.mirrors.push_back(m.url);
    out.push_back(std::move(ch));
  }
  return out;
}

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
      t.chains = chains_of(c);
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
  d.chains = t->chains;
  d.registries.clear();
  for (const auto& r : t->registries) d.registries.push_back(r.name);
  std::function<std::optional<unsigned>(const std::string&)> get;
  if (f.probe) {
    // GET http://HOST:PORT/v2/ (layercached's, or a mirror's); https is not probed.
    get = [](const std::string& url) -> std::optional<unsigned> {
      std::string_view base = url;
      if (!base.starts_with("http://")) return std::nullopt;
      if (base.ends_with("/v2/")) base.remove_suffix(4);
      options at;
      at.timeout = std::chrono::seconds(5);
      if (base.find('/', 7) != std::string_view::npos) return std::nullopt;
      if (!parse_admin(base, at) && !parse_admin(std::string(base) + ":80", at)) {
        return std::nullopt;
      }
      try {
        return call(at, http::verb::get, "/v2/", {}).status;
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
  const std::string& cmd = args[0];
  if (cmd == "stats" && args.size() == 1) {
    target = "/admin/stats";
  } else if (cmd == "blobs" && args.size() <= 2) {
    target = "/admin/blobs";
    if (args.size() == 2) target += "?limit=" + args[1];
  } else if (cmd == "purge" && args.size() == 2) {
    method = http::verb::delete_;
    target = args[1] == "--all" ? "/admin/blobs" : "/admin/blobs/" + digest_arg(args, 1);
  } else if (cmd == "profiles" && args.size() == 1) {
    target = "/admin/profiles";
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
    std::cerr << "layercachectl: " << layercache::ctl::error_text(a) << "\n";
    return 1;
  }
  std::cout << a.body;
  if (!a.body.empty() && a.body.back() != '\n') std::cout << '\n';
  return 0;
}

// preload and profile export/import (ctl_image.cpp), else admin_command; connection errors
// are exit status 2.
int image_or_admin_command(const options& o, const std::vector<std::string>& args) {
  namespace ctl = layercache::ctl;
  const bool profile = args[0] == "profile" && args.size() >= 2;
  try {
    if (args[0] == "preload") return ctl::preload_command(o, args);
    if (profile && args[1] == "export") return ctl::profile_export_command(o, args);
    if (profile && args[1] == "import" && (args.size() == 3 || args.size() == 4)) {
      return ctl::profile_import_command(o, args);
    }
  } catch (const std::exception& e) {
    std::cerr << "layercachectl: " << e.what() << "\n";
    return 2;
  }
  return admin_command(o, args);
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
  return image_or_admin_command(o, args);
}
