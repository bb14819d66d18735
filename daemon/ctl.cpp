// layercachectl: the operator's client for a running layercached's admin API (plain HTTP on
// the operations listener, docs/operations.md).
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
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/doctor.hpp"
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
    "  doctor [--root DIR] [--mirror URL] [--no-probe]\n"
    "                                 what dockerd and containerd on this node miss to pull\n"
    "                                 through layercache (default mirror http://127.0.0.1:5000),\n"
    "                                 and on a lazy node containerd's stargz proxy plugin,\n"
    "                                 layercache-stargz (socket, -mirror flags) and /dev/fuse;\n"
    "                                 --no-probe reads files only\n"
    "\n"
    "--admin defaults to $LAYERCACHE_ADMIN, else 127.0.0.1:9401. --token-file (or\n"
    "$LAYERCACHE_ADMIN_TOKEN_FILE) holds the admin bearer token when admin.token_file is set.\n"
    "Exit status: 0 on a 2xx answer, 1 on any other answer (its body on stderr), 2 on usage or\n"
    "connection errors.\n";

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

answer call(const options& o, http::verb method, const std::string& target, std::string body) {
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  stream.expires_after(o.timeout);
  stream.connect(resolver.resolve(o.host, o.port));
  http::request<http::string_body> req{method, target, 11};
  const bool v6 = o.host.find(':') != std::string::npos;
  req.set(http::field::host, (v6 ? "[" + o.host + "]" : o.host) + ":" + o.port);
  req.set(http::field::user_agent, "layercachectl");
  if (!o.token.empty()) req.set(http::field::authorization, "Bearer " + o.token);
  // Every state-changing call says JSON (the admin API refuses those that do not).
  if (!body.empty() || method != http::verb::get) {
    req.set(http::field::content_type, "application/json");
  }
  req.body() = std::move(body);
  req.prepare_payload();
  req.keep_alive(false);
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::uint64_t{256} * 1024 * 1024);
  http::read(stream, buffer, parser);
  beast::error_code ec;
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

  if (args[0] == "doctor") {
    layercache::doctor::options d;
    bool probe = true;
    for (std::size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--root" && i + 1 < args.size()) {
        d.root = args[++i];
      } else if (args[i] == "--mirror" && i + 1 < args.size()) {
        d.mirror = args[++i];
      } else if (args[i] == "--no-probe") {
        probe = false;
        d.probe_sockets = false;
      } else {
        std::cerr << "layercachectl: unknown doctor argument " << args[i] << "\n" << usage;
        return 2;
      }
    }
    std::function<std::optional<unsigned>(const std::string&)> get;
    options target;
    if (probe && d.mirror.starts_with("http://") && parse_admin(d.mirror, target)) {
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
    std::cerr << "layercachectl: " << o.host << ":" << o.port << ": " << e.what() << "\n";
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
