#include "daemon/doctor.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <vector>

#include "daemon/node_setup.hpp"

namespace layercache::doctor {

std::optional<std::string> read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

namespace {
std::string errno_text() { return std::error_code(errno, std::generic_category()).message(); }
}  // namespace

std::string grpc_answers(const std::filesystem::path& path, std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string name = path.string();
  if (name.size() >= sizeof(addr.sun_path)) return "socket path too long";
  std::memcpy(addr.sun_path, name.c_str(), name.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_text();
  struct closer {
    int fd;
    explicit closer(int f) : fd(f) {}
    closer(const closer&) = delete;
    closer& operator=(const closer&) = delete;
    ~closer() { ::close(fd); }
  } close_fd(fd);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return std::string("connect: ") + errno_text();
  }
  static const std::string not_grpc = "closed without an HTTP/2 answer (not a gRPC server)";
  // The client connection preface: the magic, then an empty SETTINGS frame.
  using namespace std::string_view_literals;
  static constexpr std::string_view preface =
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"sv;
  static_assert(preface.size() == 24 + 9);
  if (::send(fd, preface.data(), preface.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(preface.size())) {
    if (errno == EPIPE || errno == ECONNRESET) return not_grpc;
    return std::string("send: ") + errno_text();
  }
  // The server's first frame: 9 bytes of header, type 4 (SETTINGS), no ACK flag.
  std::array<unsigned char, 9> header{};
  std::size_t got = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got < header.size()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return "no answer within " + std::to_string(timeout.count()) + " ms";
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) return std::string("poll: ") + errno_text();
    if (ready <= 0) continue;
    const auto n = ::recv(fd, header.data() + got, header.size() - got, 0);
    if (n == 0) return not_grpc;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ECONNRESET) return not_grpc;
      return std::string("recv: ") + errno_text();
    }
    got += static_cast<std::size_t>(n);
  }
  if (header[3] != 0x04 || (header[4] & 0x01) != 0) {
    return "answered, but not with HTTP/2 SETTINGS (not a gRPC server)";
  }
  return {};
}

namespace {

std::string strip_slash(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

// `path` under `root` ("/etc/x" → root/etc/x).
std::filesystem::path under(const std::filesystem::path& root, const std::string& path) {
  return root / std::filesystem::path(path).relative_path();
}

struct report {
  std::ostream& out;
  int problems = 0;
  void ok(std::string_view what) { out << "ok       " << what << "\n"; }
  void note(std::string_view what) { out << "note     " << what << "\n"; }
  void missing(std::string_view what, std::string_view snippet = {}) {
    ++problems;
    out << "missing  " << what << "\n";
    if (!snippet.empty()) {
      std::istringstream lines{std::string(snippet)};
      for (std::string line; std::getline(lines, line);) out << "           " << line << "\n";
    }
  }
};

void check_dockerd(report& r, const options& o) {
  const auto path = o.daemon_json ? *o.daemon_json : under(o.root, "/etc/docker/daemon.json");
  const std::string snippet = "{\n  \"registry-mirrors\": [\"" + o.mirror + "\"]\n}";
  const auto text = read_text(path);
  if (!text) {
    r.missing("dockerd: " + path.string() + " does not exist; create it with:", snippet);
    return;
  }
  boost::system::error_code ec;
  const auto doc = boost::json::parse(*text, ec);
  if (ec || !doc.is_object()) {
    r.missing("dockerd: " + path.string() + " is not a JSON object (" +
              (ec ? ec.message() : std::string("wrong type")) + ")");
    return;
  }
  const auto* mirrors = doc.as_object().if_contains("registry-mirrors");
  if (mirrors != nullptr && mirrors->is_array()) {
    for (const auto& m : mirrors->as_array()) {
      if (m.is_string() && strip_slash(std::string(m.as_string())) == strip_slash(o.mirror)) {
        r.ok("dockerd: registry-mirrors has " + o.mirror + " (docker.io images only)");
        return;
      }
    }
  }
  r.missing("dockerd: " + path.string() + " has no \"registry-mirrors\" entry " + o.mirror +
                "; add it (then restart dockerd):",
            "\"registry-mirrors\": [\"" + o.mirror + "\"]");
}

// <hosts dir>/<registry>/hosts.toml sends pulls to the mirror first, as node setup writes it.
void check_hosts(report& r, const options& o, const std::filesystem::path& dir,
                 const std::string& registry) {
  const auto hosts = dir / registry / "hosts.toml";
  const std::string table = "[host.\"" + o.mirror + "\"]\n  capabilities = [\"pull\", \"resolve\"]";
  const auto h = read_text(hosts);
  if (!h) {
    r.missing("containerd: " + hosts.string() +
                  " does not exist (`layercachectl node setup --containerd` writes it); or:",
              "server = \"https://" +
                  (registry == "docker.io" ? std::string("registry-1.docker.io") : registry) +
                  "\"\n\n" + table);
    return;
  }
  if (const auto why = node_setup::check_hosts_toml(*h, o.mirror); !why.empty()) {
    r.missing("containerd: " + hosts.string() + " " + why + "; add:", table);
    return;
  }
  r.ok("containerd: " + hosts.string() + " sends " + registry + " pulls to " + o.mirror);
}

// What check_containerd read, for the lazy-node checks.
struct containerd_view {
  std::optional<std::string> config;  // config.toml's text
  bool v3 = false;                    // config version 3 (containerd 2.x)
  std::filesystem::path hosts;        // the hosts directory, under the root
};

containerd_view check_containerd(report& r, const options& o) {
  const auto config = under(o.root, "/etc/containerd/config.toml");
  const auto text = read_text(config);
  std::string hosts_dir;
  bool v3 = false;
  if (!text) {
    r.missing("containerd: " + config.string() +
                  " does not exist (the defaults set no config_path); create it with:",
              "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = "
              "\"/etc/containerd/certs.d\"");
  } else {
    const std::regex version(R"((^|\n)\s*version\s*=\s*3)");
    v3 = std::regex_search(*text, version);
    const std::regex config_path(R"rx((^|\n)\s*config_path\s*=\s*"([^"]*)")rx");
    std::smatch m;
    const std::regex discard(R"((^|\n)\s*discard_unpacked_layers\s*=\s*true)");
    const bool discards = std::regex_search(*text, discard);
    if (std::regex_search(*text, m, config_path)) {
      hosts_dir = m[2].str();
      if (const auto colon = hosts_dir.find(':'); colon != std::string::npos) {
        // containerd 2.1+ pulls CRI images through the transfer service unless
        // discard_unpacked_layers is set, and that path reads config_path as one directory.
        if (v3 && !discards) {
          r.missing("containerd: config_path = \"" + hosts_dir +
                        "\" is a list; containerd 2.1+ pulls through its transfer service, "
                        "which takes it as one directory and skips every mirror; use one "
                        "directory:",
                    "config_path = \"" + hosts_dir.substr(0, colon) + "\"");
        } else {
          r.note("containerd: config_path = \"" + hosts_dir +
                 "\" is a list: fine here, but containerd 2.1+ without "
                 "discard_unpacked_layers reads it as one directory");
        }
        hosts_dir = hosts_dir.substr(0, colon);
      } else {
        r.ok("containerd: config_path = " + hosts_dir);
      }
    } else if (v3) {
      r.missing("containerd: " + config.string() + " (containerd 2.x) sets no config_path; add:",
                "[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = "
                "\"/etc/containerd/certs.d\"");
    } else {
      r.missing("containerd: " + config.string() + " sets no config_path; add:",
                "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = "
                "\"/etc/containerd/certs.d\"");
    }
    if (discards) {
      r.note(
          "containerd: discard_unpacked_layers = true drops layer blobs after unpacking: each new "
          "image version's layers come through layercache again (served from its cache)");
    }
  }
  if (hosts_dir.empty()) hosts_dir = "/etc/containerd/certs.d";
  containerd_view view{text, v3, under(o.root, hosts_dir)};
  if (o.hosts_dir) {
    if (o.hosts_dir->lexically_normal() != view.hosts.lexically_normal()) {
      r.note("containerd: checking " + o.hosts_dir->string() + "; the CRI plugin reads " +
             view.hosts.string() + " (ctr: --hosts-dir)");
    }
    view.hosts = *o.hosts_dir;
  }
  for (const auto& registry : o.registries) check_hosts(r, o, view.hosts, registry);
  return view;
}

// ---- a lazy node: containerd's stargz proxy plugin, layercache-stargz, /dev/fuse ----------

constexpr std::string_view stargz_socket = "/run/layercache-stargz/stargz.sock";
constexpr std::string_view stargz_env = "/etc/layercache/stargz.env";
constexpr std::string_view stargz_unit = "/etc/systemd/system/layercache-stargz.service";

// The body of the first TOML table whose header matches `header` (up to the next header),
// or nullopt. Good enough for containerd's configs: tables, not inline tables.
std::optional<std::string> toml_table(const std::string& text, const std::regex& header) {
  std::smatch m;
  if (!std::regex_search(text, m, header)) return std::nullopt;
  const auto from = static_cast<std::size_t>(m.position(0) + m.length(0));
  static const std::regex next_header(R"((^|\n)\s*\[)");
  std::smatch n;
  const std::string rest = text.substr(from);
  if (std::regex_search(rest, n, next_header)) return rest.substr(0, n.position(0));
  return rest;
}

// `key = "value"` (or a bare value: true, false, numbers) in a table body.
std::optional<std::string> toml_value(const std::string& body, const std::string& key) {
  const std::regex re("(^|\\n)\\s*" + key + R"rx(\s*=\s*("([^"]*)"|'([^']*)'|([^\s#]+)))rx");
  std::smatch m;
  if (!std::regex_search(body, m, re)) return std::nullopt;
  if (m[3].matched) return m[3].str();
  if (m[4].matched) return m[4].str();
  return m[5].str();
}

// A table header regex for dotted keys, each bare or quoted: {"proxy_plugins", "stargz"}.
std::regex table_header(const std::vector<std::string>& keys) {
  std::string re = R"((^|\n)\s*\[\s*)";
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (i != 0) re += R"(\s*\.\s*)";
    const std::string k = std::regex_replace(keys[i], std::regex(R"([.])"), R"(\.)");
    re.append("(").append(k).append("|\"").append(k).append("\"|'").append(k).append("')");
  }
  re += R"(\s*\])";
  return std::regex(re);
}

bool loopback_host(std::string_view host) {
  return host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
}

// A -mirror value as a URL: "http://" for a loopback host without a scheme, as
// layercache-stargz reads it; "https://" for another.
std::string mirror_url(const std::string& m) {
  if (m.find("://") != std::string::npos) return strip_slash(m);
  return strip_slash((loopback_host(m) ? "http://" : "https://") + m);
}

// Values of a Go flag (-name V, -name=V, --name V, --name=V) in whitespace-separated words.
std::vector<std::string> flag_values(const std::vector<std::string>& words, std::string_view name) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < words.size(); ++i) {
    for (const std::string dash : {"-", "--"}) {
      const std::string flag = dash + std::string(name);
      if (words[i] == flag && i + 1 < words.size()) out.push_back(words[i + 1]);
      if (words[i].starts_with(flag + "=")) out.push_back(words[i].substr(flag.size() + 1));
    }
  }
  return out;
}

std::vector<std::string> words_of(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// LAYERCACHE_STARGZ_FLAGS of the flags file (a systemd EnvironmentFile), or nullopt.
std::optional<std::string> env_flags(const std::string& text) {
  const std::regex re(
      R"rx((^|\n)\s*LAYERCACHE_STARGZ_FLAGS\s*=\s*("([^"]*)"|'([^']*)'|([^\n]*)))rx");
  std::smatch m;
  if (!std::regex_search(text, m, re)) return std::nullopt;
  return m[3].matched ? m[3].str() : m[4].matched ? m[4].str() : m[5].str();
}

// The registries whose hosts.toml sends pulls to the mirror.
std::set<std::string> registries_through(const std::filesystem::path& hosts_dir,
                                         const std::string& mirror) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(hosts_dir, ec)) {
    const auto text = read_text(e.path() / "hosts.toml");
    if (text && text->find("[host.\"" + strip_slash(mirror) + "\"]") != std::string::npos) {
      out.insert(e.path().filename().string());
    }
  }
  return out;
}

// containerd's side: the proxy plugin and the CRI plugin's snapshotter. The address containerd
// dials for the snapshotter (the deploy default when it names none).
std::string check_lazy_containerd(report& r, const options& o,
                                  const std::optional<std::string>& proxy,
                                  const std::optional<std::string>& cri, bool v3) {
  const auto config = under(o.root, "/etc/containerd/config.toml").string();
  std::string address(stargz_socket);
  if (!proxy) {
    r.missing("lazy: " + config + " has no [proxy_plugins.stargz]; add (then restart containerd):",
              "[proxy_plugins.stargz]\n  type = \"snapshot\"\n  address = \"" + address + "\"");
  } else if (toml_value(*proxy, "type") != "snapshot") {
    r.missing("lazy: [proxy_plugins.stargz] in " + config + " needs type = \"snapshot\"");
  } else if (const auto a = toml_value(*proxy, "address"); !a || a->empty()) {
    r.missing("lazy: [proxy_plugins.stargz] in " + config + " has no address; add:",
              "  address = \"" + address + "\"");
  } else {
    address = *a;
    r.ok("lazy: containerd has the stargz snapshotter at " + address);
  }
  const auto cri_snapshotter = cri ? toml_value(*cri, "snapshotter") : std::nullopt;
  if (cri_snapshotter == "stargz") {
    const auto annotations = toml_value(*cri, "disable_snapshot_annotations");
    // containerd 1.6 defaults to true (no labels: every pull is a full one), 2.x to false.
    if (annotations == "true" || (!v3 && annotations != "false")) {
      r.missing(
          "lazy: the CRI plugin uses stargz but passes it no image labels (containerd 1.x "
          "defaults to disable_snapshot_annotations = true): Kubernetes pulls are full "
          "pulls; add to its [plugins.\"io.containerd.grpc.v1.cri\".containerd]:",
          "disable_snapshot_annotations = false");
    } else {
      r.ok("lazy: the CRI plugin (Kubernetes) pulls with snapshotter stargz");
    }
  } else {
    r.note("lazy: the CRI plugin's snapshotter is " +
           (cri_snapshotter ? "\"" + *cri_snapshotter + "\"" : std::string("the default")) +
           ": Kubernetes pulls are full pulls; only ctr-remote rpull and `ctr run --snapshotter "
           "stargz` are lazy (deploy/containerd/config-stargz.toml sets snapshotter = "
           "\"stargz\")");
  }
  return address;
}

// The snapshotter's socket exists and (with probe_sockets) answers.
void check_lazy_socket(report& r, const options& o, const std::string& address) {
  const auto socket = under(o.root, address);
  std::error_code ec;
  if (!std::filesystem::is_socket(socket, ec)) {
    r.missing("lazy: no socket at " + socket.string() +
              " (is layercache-stargz running? `systemctl status layercache-stargz`)");
  } else if (o.probe_sockets) {
    if (const auto why = grpc_answers(socket, std::chrono::seconds(2)); !why.empty()) {
      r.missing("lazy: layercache-stargz does not answer at " + socket.string() + ": " + why);
    } else {
      r.ok("lazy: layercache-stargz answers at " + socket.string());
    }
  }
}

// The snapshotter's flags: the file the unit reads, then the unit's own ExecStart (whose
// -address must be the one containerd dials).
std::vector<std::string> lazy_flags(report& r, const std::optional<std::string>& env,
                                    const std::optional<std::string>& unit,
                                    const std::filesystem::path& unit_path,
                                    const std::string& address) {
  std::vector<std::string> words;
  if (env) {
    if (const auto f = env_flags(*env)) words = words_of(*f);
  }
  if (!unit) return words;
  static const std::regex exec(R"((^|\n)\s*ExecStart\s*=\s*([^\n]*))");
  std::smatch m;
  if (!std::regex_search(*unit, m, exec)) return words;
  const auto argv = words_of(m[2].str());
  const auto unit_address = flag_values(argv, "address");
  if (!unit_address.empty() && unit_address.back() != address) {
    r.missing("lazy: " + unit_path.string() + " serves -address " + unit_address.back() +
              ", containerd dials " + address);
  }
  words.insert(words.end(), argv.begin(), argv.end());
  return words;
}

// Every registry containerd pulls through the mirror is read by the snapshotter through it too.
void check_lazy_mirrors(report& r, const options& o, const containerd_view& c,
                        const std::vector<std::string>& words,
                        const std::filesystem::path& env_path) {
  std::set<std::string> through;
  std::map<std::string, std::string> elsewhere;
  for (const auto& m : flag_values(words, "mirror")) {
    const auto eq = m.find('=');
    if (eq == std::string::npos) continue;
    const std::string registry = m.substr(0, eq);
    const std::string url = mirror_url(m.substr(eq + 1));
    if (url == strip_slash(o.mirror)) {
      through.insert(registry);
    } else {
      elsewhere.emplace(registry, url);
    }
  }
  for (const auto& [registry, url] : elsewhere) {
    if (!through.contains(registry)) {
      std::string what = "lazy: layercache-stargz reads ";
      what.append(registry).append("'s layers through ").append(url);
      r.missing(what.append(", not through ").append(o.mirror));
    }
  }
  const auto resolved = registries_through(c.hosts, o.mirror);
  for (const auto& reg : resolved) {
    if (!through.contains(reg)) {
      std::string what = "lazy: containerd pulls ";
      what.append(reg).append(" through ").append(o.mirror);
      what.append(" but layercache-stargz reads its layers from ").append(reg);
      what.append(" directly; add to LAYERCACHE_STARGZ_FLAGS in ").append(env_path.string());
      std::string flag = "-mirror ";
      flag.append(reg).append("=").append(o.mirror);
      r.missing(what.append(":"), flag);
    }
  }
  if (through.empty() && resolved.empty() && elsewhere.empty()) {
    r.missing("lazy: layercache-stargz has no -mirror for " + o.mirror +
                  " (it reads layers from the registries directly); in " + env_path.string() + ":",
              "LAYERCACHE_STARGZ_FLAGS=\"-mirror docker.io=" + o.mirror + "\"");
  } else if (!through.empty()) {
    std::string listed;
    for (const auto& reg : through) listed.append(listed.empty() ? "" : ", ").append(reg);
    r.ok("lazy: layercache-stargz reads the layers of " + listed + " through " + o.mirror);
  }
}

void check_lazy(report& r, const options& o, const containerd_view& c) {
  const std::string text = c.config.value_or("");
  const auto proxy = toml_table(text, table_header({"proxy_plugins", "stargz"}));
  // CRI: containerd 1.x (config version 2) or 2.x (version 3).
  const auto cri =
      c.v3 ? toml_table(text, table_header({"plugins", "io.containerd.cri.v1.images"}))
           : toml_table(text, table_header({"plugins", "io.containerd.grpc.v1.cri", "containerd"}));
  const auto cri_snapshotter = cri ? toml_value(*cri, "snapshotter") : std::nullopt;
  const auto env_path = under(o.root, std::string(stargz_env));
  const auto unit_path = under(o.root, std::string(stargz_unit));
  const auto env = read_text(env_path);
  const auto unit = read_text(unit_path);
  if (!proxy && cri_snapshotter != "stargz" && !env && !unit) {
    r.note(
        "lazy pulling: not set up (containerd has no [proxy_plugins.stargz]); a lazy node "
        "needs deploy/containerd/config-stargz.toml and deploy/systemd/layercache-stargz.*");
    return;
  }
  const std::string address = check_lazy_containerd(r, o, proxy, cri, c.v3);
  check_lazy_socket(r, o, address);
  const auto words = lazy_flags(r, env, unit, unit_path, address);
  if (!env && !unit) {
    r.missing("lazy: neither " + env_path.string() + " nor " + unit_path.string() +
                  " exists: layercache-stargz's -mirror flags unknown; create " +
                  env_path.string() + " with:",
              "LAYERCACHE_STARGZ_FLAGS=\"-mirror docker.io=" + o.mirror + "\"");
  } else {
    check_lazy_mirrors(r, o, c, words, env_path);
  }
  const auto fuse = under(o.root, "/dev/fuse");
  std::error_code ec;
  if (!std::filesystem::is_character_file(fuse, ec)) {
    r.missing("lazy: no " + fuse.string() +
              " (`modprobe fuse`; in a container, pass the device through)");
  } else {
    r.ok("lazy: " + fuse.string() + " is there");
  }
}

// containerd's config.toml disables the CRI plugin (as Docker's containerd package ships it).
bool cri_disabled(const options& o) {
  const auto text = read_text(under(o.root, "/etc/containerd/config.toml"));
  static const std::regex disabled(
      R"rx((^|\n)\s*disabled_plugins\s*=\s*\[[^\]]*["'](cri|io\.containerd\.grpc\.v1\.cri)["'])rx");
  return text && std::regex_search(*text, disabled);
}

// Each upstream's mirrors, then the upstream: reachable or not. A mirror that does not answer
// costs no pull (the next one, then the upstream, is asked), so it is a note, not a problem.
void check_chains(report& r, const options& o,
                  const std::function<std::optional<unsigned>(const std::string&)>& probe) {
  for (const auto& c : o.chains) {
    std::string line = "upstream " + c.upstream + ": ";
    for (const auto& m : c.mirrors) line += m + " → ";
    r.note(line + c.origin + " (mirrors " + c.select + ")");
    for (const auto& m : c.mirrors) {
      if (!probe || !m.starts_with("http://")) {
        r.note("mirror " + m + ": not probed (https, or --no-probe)");
        continue;
      }
      const auto status = probe(strip_slash(m) + "/v2/");
      if (status && (*status == 200 || *status == 401)) {
        r.ok("mirror " + m + " answers /v2/ (" + std::to_string(*status) + ")");
      } else {
        r.note("mirror " + m + ": " +
               (status ? "/v2/ answered " + std::to_string(*status) : std::string("no answer")) +
               "; pulls go on to the next mirror or the upstream");
      }
    }
  }
}

}  // namespace

int run(const options& o, std::ostream& out,
        const std::function<std::optional<unsigned>(const std::string&)>& probe) {
  report r{out};
  out << "layercache doctor: mirror " << o.mirror << ", files under " << o.root.string() << "\n";
  if (probe && o.mirror.starts_with("http://")) {
    const auto status = probe(strip_slash(o.mirror) + "/v2/");
    if (!status) {
      r.missing("layercached: no answer at " + o.mirror +
                "/v2/ (is it running? `systemctl "
                "status layercached`)");
    } else if (*status == 200 || *status == 401) {
      r.ok("layercached answers at " + o.mirror + "/v2/ (" + std::to_string(*status) + ")");
    } else {
      r.missing("layercached: " + o.mirror + "/v2/ answered " + std::to_string(*status));
    }
  }
  check_chains(r, o, probe);
  const bool named = o.containerd || o.docker;
  std::error_code ec;
  auto present = [&](std::initializer_list<const char*> paths) {
    return std::any_of(paths.begin(), paths.end(), [&](const char* p) {
      return std::filesystem::exists(under(o.root, p), ec);
    });
  };
  const bool docker =
      o.docker ||
      (!named && (o.daemon_json || present({"/etc/docker/daemon.json", "/run/docker.sock",
                                            "/var/run/docker.sock"})));
  const bool containerd_found =
      o.hosts_dir || present({"/etc/containerd/config.toml", "/run/containerd/containerd.sock"});
  // Docker's own containerd (its package's config disables the CRI plugin) pulls nothing
  // through hosts.toml: dockerd pulls itself.
  const bool dockers_only = docker && !o.hosts_dir && cri_disabled(o);
  const bool containerd = o.containerd || (!named && containerd_found && !dockers_only);
  if (docker) {
    check_dockerd(r, o);
  } else if (!named) {
    r.note("dockerd: not installed (no /etc/docker/daemon.json, no docker.sock), skipped");
  }
  if (containerd) {
    check_lazy(r, o, check_containerd(r, o));
  } else if (!named && containerd_found) {
    r.note(
        "containerd: its CRI plugin is disabled (dockerd's containerd), skipped; "
        "--containerd checks it");
  } else if (!named) {
    r.note(
        "containerd: not installed (no /etc/containerd/config.toml, no containerd.sock), "
        "skipped");
  }
  if (!docker && !containerd) {
    r.missing("no container runtime found under " + o.root.string() +
              "; name one with --docker or --containerd");
  }
  out << (r.problems == 0 ? "all runtimes found use layercache\n"
                          : std::to_string(r.problems) + " thing(s) to fix\n");
  return r.problems == 0 ? 0 : 1;
}

}  // namespace layercache::doctor
