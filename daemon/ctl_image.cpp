#include "daemon/ctl_image.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <thread>

namespace layercache::ctl {
namespace {

namespace http = boost::beast::http;
using steady = std::chrono::steady_clock;

constexpr auto poll_interval = std::chrono::milliseconds(500);
// Progress lines on a stderr that is no terminal (a CI log): at most one this often.
constexpr auto log_interval = std::chrono::seconds(5);

// The flags preload and profile export share, and the positional arguments left.
struct image_flags {
  std::string upstream;
  std::string platform;
  bool start = false;
  std::vector<std::string> positional;
};

// args[first...]; `start_allowed`: --start is one of them. False (said) on a bad flag.
bool parse_image_flags(const std::vector<std::string>& args, std::size_t first, bool start_allowed,
                       image_flags& f) {
  for (std::size_t i = first; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool value = i + 1 < args.size();
    if (a == "--upstream" && value) {
      f.upstream = args[++i];
    } else if (a == "--platform" && value) {
      f.platform = args[++i];
    } else if (a == "--start" && start_allowed) {
      f.start = true;
    } else if (a.starts_with("--")) {
      std::cerr << "layercachectl: unknown or incomplete argument " << a << "\n";
      return false;
    } else {
      f.positional.push_back(a);
    }
  }
  return true;
}

std::uint64_t number(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return 0;
  if (const auto* n = v->if_uint64()) return *n;
  if (const auto* n = v->if_int64()) return *n < 0 ? 0 : static_cast<std::uint64_t>(*n);
  return 0;
}

std::string text_of(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

// "716.8 KiB"
std::string human(std::uint64_t bytes) {
  static constexpr std::array<std::string_view, 5> units{"B", "KiB", "MiB", "GiB", "TiB"};
  auto value = static_cast<double>(bytes);
  std::size_t u = 0;
  while (value >= 1024 && u + 1 < units.size()) {
    value /= 1024;
    ++u;
  }
  std::array<char, 32> text{};
  (void)std::snprintf(text.data(), text.size(), u == 0 ? "%.0f %s" : "%.1f %s", value,
                      std::string(units[u]).c_str());
  return text.data();
}

// One progress line of an async preload's status.
std::string progress_line(const std::string& reference, const boost::json::object& s) {
  std::string line = "preload " + reference + ": ";
  if (!s.contains("listed") || !s.at("listed").is_bool() || !s.at("listed").as_bool()) {
    const auto manifests = number(s, "manifests");
    return line + "resolving" +
           (manifests == 0 ? std::string() : " (" + std::to_string(manifests) + " manifests)");
  }
  const auto bytes = number(s, "bytes");
  const auto total = number(s, "bytes_total");
  line += std::to_string(number(s, "blobs")) + "/" + std::to_string(number(s, "blobs_total")) +
          " blobs, " + std::to_string(bytes) + "/" + std::to_string(total) + " bytes (" +
          human(bytes) + " of " + human(total) + ")";
  return line;
}

// Parses an answer's JSON object; nullopt (said) when it is none.
std::optional<boost::json::object> json_object(const answer& a) {
  boost::system::error_code ec;
  auto v = boost::json::parse(a.body, ec);
  if (ec || !v.is_object()) {
    std::cerr << "layercachectl: the answer is no JSON object: " << a.body << "\n";
    return std::nullopt;
  }
  return std::move(v.as_object());
}

// Polls GET /admin/preload/<id> until the preload ends, showing progress on stderr. Gives up
// (1) when nothing moved for o.timeout.
int follow_preload(const options& o, const std::string& id, const std::string& reference) {
  const bool tty = ::isatty(STDERR_FILENO) == 1;
  std::string shown;
  std::string state_seen;
  auto moved = steady::now();
  auto logged = steady::time_point{};
  for (;;) {
    const answer a = call(o, http::verb::get, "/admin/preload/" + id, {});
    if (a.status != 200) {
      std::cerr << "layercachectl: preload " << reference << ": " << error_text(a) << "\n";
      return 1;
    }
    const auto s = json_object(a);
    if (!s) return 1;
    const std::string state = text_of(*s, "state");
    const std::string line = progress_line(reference, *s);
    const auto now = steady::now();
    if (line != shown) moved = now;
    if (state != "running") {
      if (tty) std::cerr << "\r\033[K";
      if (state == "done") {
        std::cerr << line << ", done: " << number(*s, "fetched_bytes") << " bytes from upstream "
                  << text_of(*s, "upstream") << " (" << text_of(*s, "digest") << ")\n";
        std::cout << a.body;
        return 0;
      }
      std::cerr << "layercachectl: preload " << reference << " failed: " << text_of(*s, "error")
                << " (HTTP " << number(*s, "status") << ")\n";
      return 1;
    }
    if (line != shown && (tty || now - logged >= log_interval)) {
      std::cerr << (tty ? "\r\033[K" : "") << line << (tty ? "" : "\n") << std::flush;
      logged = now;
    }
    shown = line;
    if (now - moved > o.timeout) {
      std::cerr << (tty ? "\n" : "") << "layercachectl: preload " << reference
                << " made no progress for " << o.timeout.count()
                << " s (--timeout); layercached goes on with it: GET /admin/preload/" << id << "\n";
      return 1;
    }
    std::this_thread::sleep_for(poll_interval);
  }
}

// The body of POST /admin/preload.
std::string preload_body(const std::string& reference, const image_flags& f,
                         const std::string& platform) {
  boost::json::object body{{"reference", reference}, {"platform", platform}};
  if (!f.upstream.empty()) body["upstream"] = f.upstream;
  if (f.start) {
    body["what"] = "start";
  } else {
    body["async"] = true;
  }
  return boost::json::serialize(body);
}

std::optional<std::string> read_input(const std::string& path) {
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

}  // namespace

std::string platform_of_machine(std::string_view machine) {
  std::string arch(machine);
  if (machine == "x86_64" || machine == "amd64") {
    arch = "amd64";
  } else if (machine == "aarch64" || machine == "arm64" || machine == "armv8l") {
    arch = "arm64";
  } else if (machine == "armv7l" || machine == "armv7") {
    arch = "arm/v7";
  } else if (machine == "armv6l" || machine == "armv6") {
    arch = "arm/v6";
  } else if (machine == "i386" || machine == "i486" || machine == "i586" || machine == "i686") {
    arch = "386";
  }
  return "linux/" + arch;
}

std::string host_platform() {
  utsname u{};
  if (::uname(&u) != 0) return "linux/amd64";
  return platform_of_machine(u.machine);
}

bool looks_like_digest(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 32 > text.size()) return false;
  for (const char c : text.substr(0, colon)) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '.' || c == '_' ||
          c == '-')) {
      return false;
    }
  }
  for (const char c : text.substr(colon + 1)) {
    if (!((c >= 'a' && c <= 'f') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

int preload_command(const options& o, const std::vector<std::string>& args) {
  image_flags f;
  if (!parse_image_flags(args, 1, true, f)) return 2;
  if (f.positional.empty() || f.positional.size() > 2 ||
      (f.positional.size() == 2 && !f.platform.empty())) {
    std::cerr << "layercachectl: preload takes one REFERENCE (and the platform once)\n";
    return 2;
  }
  const std::string& reference = f.positional[0];
  // The old positional PLATFORM still works; else the flag, else this host's.
  const std::string platform = f.positional.size() == 2 ? f.positional[1]
                               : f.platform.empty()     ? host_platform()
                                                        : f.platform;
  const answer a =
      call(o, http::verb::post, "/admin/preload", preload_body(reference, f, platform));
  if (a.status < 200 || a.status >= 300) {
    std::cerr << "layercachectl: preload " << reference << ": " << error_text(a) << "\n";
    return 1;
  }
  if (f.start) {
    std::cout << a.body;
    return 0;
  }
  const auto started = json_object(a);
  if (!started) return 1;
  const std::string id = text_of(*started, "id");
  if (a.status != 202 || id.empty()) {
    // A layercached from before async preloads answered when it was done.
    std::cout << a.body;
    return 0;
  }
  return follow_preload(o, id, reference);
}

int profile_export_command(const options& o, const std::vector<std::string>& args) {
  image_flags f;
  if (!parse_image_flags(args, 2, false, f)) return 2;
  if (f.positional.empty() || f.positional.size() > 2) {
    std::cerr << "layercachectl: profile export takes IMAGE or DIGEST, and a FILE\n";
    return 2;
  }
  const std::string& image = f.positional[0];
  std::string digest = image;
  if (!looks_like_digest(image)) {
    const std::string platform = f.platform.empty() ? host_platform() : f.platform;
    std::string target =
        "/admin/resolve?reference=" + query_value(image) + "&platform=" + query_value(platform);
    if (!f.upstream.empty()) target += "&upstream=" + query_value(f.upstream);
    const answer r = call(o, http::verb::get, target, {});
    if (r.status != 200) {
      std::cerr << "layercachectl: " << image << ": " << error_text(r) << "\n";
      return 1;
    }
    const auto resolved = json_object(r);
    if (!resolved) return 1;
    digest = text_of(*resolved, "digest");
  } else if (!f.upstream.empty() || !f.platform.empty()) {
    std::cerr << "layercachectl: --upstream and --platform apply to an image reference only\n";
    return 2;
  }
  const answer a = call(o, http::verb::get, "/admin/profiles/" + digest, {});
  if (a.status != 200) {
    std::cerr << "layercachectl: " << (digest == image ? digest : image + " (" + digest + ")")
              << ": " << error_text(a) << "\n";
    return 1;
  }
  if (f.positional.size() == 1) {
    std::cout << a.body;
    return 0;
  }
  std::ofstream out(f.positional[1], std::ios::binary | std::ios::trunc);
  out << a.body;
  if (!out) {
    std::cerr << "layercachectl: cannot write " << f.positional[1] << "\n";
    return 2;
  }
  return 0;
}

int profile_import_command(const options& o, const std::vector<std::string>& args) {
  const std::string& file = args.back();
  auto text = read_input(file);
  if (!text) {
    std::cerr << "layercachectl: cannot read " << file << "\n";
    return 2;
  }
  std::string digest;
  if (args.size() == 4) {
    digest = args[2];
  } else {
    boost::system::error_code ec;
    const auto doc = boost::json::parse(*text, ec);
    const auto* m = ec || !doc.is_object() ? nullptr : doc.as_object().if_contains("manifest");
    if (m == nullptr || !m->is_string()) {
      std::cerr << "layercachectl: " << file << " is no profile (no \"manifest\" digest)\n";
      return 2;
    }
    digest = std::string(m->as_string());
  }
  if (!looks_like_digest(digest)) {
    std::cerr << "layercachectl: not a digest: " << digest << "\n";
    return 2;
  }
  const answer a = call(o, http::verb::put, "/admin/profiles/" + digest, std::move(*text));
  if (a.status != 200) {
    std::cerr << "layercachectl: " << error_text(a) << "\n";
    return 1;
  }
  std::cout << a.body;
  return 0;
}

}  // namespace layercache::ctl
