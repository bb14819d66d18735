#include "daemon/doctor.hpp"

#include <boost/json.hpp>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

namespace layercache::doctor {

std::optional<std::string> read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
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
  const auto path = under(o.root, "/etc/docker/daemon.json");
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

void check_containerd(report& r, const options& o) {
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
  const auto hosts = under(o.root, hosts_dir) / "docker.io" / "hosts.toml";
  const std::string snippet = "server = \"https://registry-1.docker.io\"\n\n[host.\"" + o.mirror +
                              "\"]\n  capabilities = [\"pull\", \"resolve\"]";
  const auto h = read_text(hosts);
  if (!h) {
    r.missing("containerd: " + hosts.string() + " does not exist; create it with:", snippet);
    return;
  }
  const std::string header = "[host.\"" + strip_slash(o.mirror) + "\"]";
  const auto at = h->find(header);
  if (at == std::string::npos) {
    r.missing("containerd: " + hosts.string() + " has no " + header + " section; add:",
              "[host.\"" + o.mirror + "\"]\n  capabilities = [\"pull\", \"resolve\"]");
    return;
  }
  const auto next = h->find("\n[", at + header.size());
  const std::string section =
      h->substr(at, next == std::string::npos ? std::string::npos : next - at);
  if (section.find("\"pull\"") == std::string::npos ||
      section.find("\"resolve\"") == std::string::npos) {
    r.missing("containerd: " + header + " in " + hosts.string() +
              " needs capabilities = [\"pull\", \"resolve\"] (resolve: tags are resolved "
              "through the mirror too)");
    return;
  }
  r.ok("containerd: " + hosts.string() + " sends docker.io pulls to " + o.mirror);
}

}  // namespace

int run(const options& o, std::ostream& out,
        const std::function<std::optional<unsigned>(const std::string&)>& probe) {
  report r{out};
  out << "layercache doctor: mirror " << o.mirror << ", files under " << o.root.string() << "\n";
  if (probe) {
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
  check_dockerd(r, o);
  check_containerd(r, o);
  out << (r.problems == 0 ? "all runtimes found use layercache\n"
                          : std::to_string(r.problems) + " thing(s) to fix\n");
  return r.problems == 0 ? 0 : 1;
}

}  // namespace layercache::doctor
