// layercache-bench: a small HTTP/1.1 load client for blob GETs (plain http only), with
// keep-alive connections. Bodies are read through a 256 KiB buffer and discarded.
//
//   layercache-bench full   --url URL [--count N] [--concurrency C] [--max-seconds S] [--json]
//   layercache-bench ranges --url URL --size BLOBSIZE [--range 64KiB] [--align 1]
//                           [--count N] [--concurrency C] [--seed S] [--max-seconds S] [--json]
//
// full:   C connections GET the whole blob until N requests have been started (or S seconds
//         have passed); a request counts as an error unless it is a 200 whose body has the
//         Content-Length it announced. Reports bytes, seconds, GB/s (10^9 bytes/s), requests/s
//         and per-request latency (request written → last body byte) p50/p90/p99/max.
// ranges: the same with `Range: bytes=a-b` for random offsets in [0, size - range], rounded
//         down to a multiple of --align (1: unaligned); an answer counts only when it is a 206
//         with exactly `range` bytes of body.
// A connection that fails is replaced by a new one. Exit status: 0 when no request failed,
// 1 when some did, 2 for bad arguments.
#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t read_buffer_size = 256 * 1024;
constexpr auto io_timeout = std::chrono::seconds(60);

struct options {
  std::string mode;
  std::string host;
  std::string port;
  std::string target;
  std::uint64_t count = 10;
  unsigned concurrency = 1;
  double max_seconds = 120;
  std::uint64_t size = 0;
  std::uint64_t range = 64 * 1024;
  std::uint64_t align = 1;
  std::uint64_t seed = 1;
  bool json = false;
};

// http://host[:port]/path → host, port, target.
bool parse_url(const std::string& url, options& o) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) return false;
  const auto rest = url.substr(scheme.size());
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  o.target = slash == std::string::npos ? "/" : rest.substr(slash);
  const auto colon = authority.rfind(':');
  if (colon == std::string::npos) {
    o.host = authority;
    o.port = "80";
  } else {
    o.host = authority.substr(0, colon);
    o.port = authority.substr(colon + 1);
  }
  return !o.host.empty() && !o.port.empty();
}

struct shared_state {
  const options& opt;
  tcp::endpoint endpoint;
  clock_type::time_point start;
  clock_type::time_point deadline;
  std::atomic<std::uint64_t> next{0};  // requests handed out
  std::atomic<std::uint64_t> ok{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> bytes{0};  // body bytes of every request, failed ones too
  std::atomic<std::uint64_t> connects{0};
  std::mutex mutex;
  std::vector<double> latencies_ms;  // successful requests
  std::string first_error;

  void error(const std::string& what) {
    errors.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(mutex);
    if (first_error.empty()) first_error = what;
  }
};

// One connection's worth of requests; reconnects after a failure.
asio::awaitable<void> client(shared_state& st, std::uint64_t seed) {
  const auto& opt = st.opt;
  std::mt19937_64 rng(seed);
  std::vector<double> latencies;
  std::vector<char> buf(read_buffer_size);
  beast::flat_buffer buffer;
  std::optional<beast::tcp_stream> stream;
  const std::string host_header = opt.host + ":" + opt.port;
  while (clock_type::now() < st.deadline) {
    if (st.next.fetch_add(1, std::memory_order_relaxed) >= opt.count) break;
    if (!stream) {
      stream.emplace(co_await asio::this_coro::executor);
      stream->expires_after(io_timeout);
      auto [ec] = co_await stream->async_connect(st.endpoint, use_nothrow);
      st.connects.fetch_add(1, std::memory_order_relaxed);
      if (ec) {
        st.error("connect: " + ec.message());
        stream.reset();
        continue;
      }
      stream->socket().set_option(tcp::no_delay(true));
      buffer.clear();
    }
    http::request<http::empty_body> req{http::verb::get, opt.target, 11};
    req.set(http::field::host, host_header);
    req.set(http::field::user_agent, "layercache-bench");
    std::uint64_t want = 0;  // body length required for a range answer
    if (opt.mode == "ranges") {
      std::uniform_int_distribution<std::uint64_t> pick(0, opt.size - opt.range);
      std::uint64_t first = pick(rng);
      first -= first % opt.align;
      want = opt.range;
      req.set(http::field::range,
              "bytes=" + std::to_string(first) + "-" + std::to_string(first + opt.range - 1));
    }
    const auto t0 = clock_type::now();
    stream->expires_after(io_timeout);
    auto [wec, wn] = co_await http::async_write(*stream, req, use_nothrow);
    (void)wn;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    auto [hec, hn] = co_await http::async_read_header(*stream, buffer, parser, use_nothrow);
    (void)hn;
    if (wec || hec) {
      st.error(std::string("request: ") + (wec ? wec : hec).message());
      stream.reset();
      continue;
    }
    std::uint64_t got = 0;
    boost::system::error_code ec;
    if (const auto length = parser.content_length(); length && !parser.is_done()) {
      // Known length (the usual case): take what came with the header, then read the socket
      // straight into `buf`, bypassing the parser.
      std::uint64_t left = *length;
      const auto early = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), left));
      buffer.consume(early);
      got += early;
      left -= early;
      while (left > 0) {
        stream->expires_after(io_timeout);
        const auto want_now = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), left));
        auto [rec, rn] =
            co_await stream->async_read_some(asio::buffer(buf.data(), want_now), use_nothrow);
        got += rn;
        left -= rn;
        if (rec) {
          ec = rec;
          break;
        }
      }
    } else {
      while (!parser.is_done()) {
        parser.get().body().data = buf.data();
        parser.get().body().size = buf.size();
        stream->expires_after(io_timeout);
        auto [rec, rn] = co_await http::async_read(*stream, buffer, parser, use_nothrow);
        (void)rn;
        if (rec == http::error::need_buffer) rec = {};
        got += buf.size() - parser.get().body().size;
        if (rec) {
          ec = rec;
          break;
        }
      }
    }
    const auto t1 = clock_type::now();
    st.bytes.fetch_add(got, std::memory_order_relaxed);
    if (ec) {
      st.error("body: " + ec.message());
      stream.reset();
      continue;
    }
    const auto& res = parser.get();
    const unsigned status = res.result_int();
    const auto length = parser.content_length();
    bool good = false;
    if (opt.mode == "full") {
      good = status == 200 && length && *length == got;
      if (!good) {
        st.error("GET " + opt.target + ": status " + std::to_string(status) + ", " +
                 std::to_string(got) + " body bytes");
      }
    } else {
      good = status == 206 && got == want;
      if (!good) {
        st.error("GET " + std::string(req[http::field::range]) + ": status " +
                 std::to_string(status) + ", " + std::to_string(got) + " body bytes");
      }
    }
    if (good) {
      st.ok.fetch_add(1, std::memory_order_relaxed);
      latencies.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    if (!parser.keep_alive()) stream.reset();
  }
  if (stream) {
    boost::system::error_code ignored;
    stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
  }
  std::lock_guard lock(st.mutex);
  st.latencies_ms.insert(st.latencies_ms.end(), latencies.begin(), latencies.end());
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank =
      static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(rank, sorted.size() - 1)];
}

int usage() {
  std::cerr << "usage: layercache-bench full --url URL [--count N] [--concurrency C] "
               "[--max-seconds S] [--json]\n"
               "       layercache-bench ranges --url URL --size BLOBSIZE [--range 64KiB] "
               "[--align N] [--count N]\n"
               "                        [--concurrency C] [--seed S] [--max-seconds S] [--json]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  std::string url;
  if (argc < 2) return usage();
  opt.mode = argv[1];
  if (opt.mode != "full" && opt.mode != "ranges") return usage();
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    auto size_value = [&]() -> std::uint64_t {
      const auto v = value();
      const auto n = layercache::config::parse_size(v);
      if (!n) throw std::invalid_argument(arg + ": bad size " + v);
      return *n;
    };
    try {
      if (arg == "--url") {
        url = value();
      } else if (arg == "--count") {
        opt.count = std::stoull(value());
      } else if (arg == "--concurrency") {
        opt.concurrency = static_cast<unsigned>(std::stoul(value()));
      } else if (arg == "--max-seconds") {
        opt.max_seconds = std::stod(value());
      } else if (arg == "--size") {
        opt.size = size_value();
      } else if (arg == "--range") {
        opt.range = size_value();
      } else if (arg == "--align") {
        opt.align = size_value();
      } else if (arg == "--seed") {
        opt.seed = std::stoull(value());
      } else if (arg == "--json") {
        opt.json = true;
      } else {
        std::cerr << "unknown argument " << arg << "\n";
        return usage();
      }
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      return 2;
    }
  }
  if (!parse_url(url, opt)) {
    std::cerr << "--url must be http://host[:port]/path\n";
    return 2;
  }
  if (opt.count == 0 || opt.concurrency == 0 || opt.max_seconds <= 0 || opt.align == 0) {
    return usage();
  }
  if (opt.mode == "ranges" && (opt.range == 0 || opt.size < opt.range)) {
    std::cerr << "ranges needs --size at least --range (and --range > 0)\n";
    return 2;
  }

  asio::io_context io;
  shared_state st{opt, {}, {}, {}};
  try {
    tcp::resolver resolver(io);
    st.endpoint = *resolver.resolve(opt.host, opt.port).begin();
  } catch (const std::exception& e) {
    std::cerr << "resolve " << opt.host << ":" << opt.port << ": " << e.what() << "\n";
    return 2;
  }
  st.start = clock_type::now();
  st.deadline = st.start + std::chrono::duration_cast<clock_type::duration>(
                               std::chrono::duration<double>(opt.max_seconds));
  for (unsigned c = 0; c < opt.concurrency; ++c) {
    asio::co_spawn(io, client(st, opt.seed * 1000003 + c), asio::detached);
  }
  io.run();
  const double seconds = std::chrono::duration<double>(clock_type::now() - st.start).count();

  auto& lat = st.latencies_ms;
  std::sort(lat.begin(), lat.end());
  const double p50 = percentile(lat, 50), p90 = percentile(lat, 90), p99 = percentile(lat, 99);
  const double max = lat.empty() ? 0 : lat.back();
  const auto bytes = st.bytes.load();
  const auto ok = st.ok.load(), errors = st.errors.load();
  const double gbps = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0;
  const double rps = seconds > 0 ? static_cast<double>(ok) / seconds : 0;
  char line[512];
  if (opt.json) {
    std::snprintf(line, sizeof line,
                  "{\"mode\":\"%s\",\"count\":%llu,\"concurrency\":%u,\"ok\":%llu,"
                  "\"errors\":%llu,\"connections\":%llu,\"bytes\":%llu,\"seconds\":%.4f,"
                  "\"gb_per_s\":%.4f,\"requests_per_s\":%.2f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
                  "\"p99_ms\":%.3f,\"max_ms\":%.3f}",
                  opt.mode.c_str(), static_cast<unsigned long long>(opt.count), opt.concurrency,
                  static_cast<unsigned long long>(ok), static_cast<unsigned long long>(errors),
                  static_cast<unsigned long long>(st.connects.load()),
                  static_cast<unsigned long long>(bytes), seconds, gbps, rps, p50, p90, p99, max);
  } else {
    std::snprintf(line, sizeof line,
                  "%-6s ok=%llu errors=%llu conc=%u conns=%llu bytes=%llu seconds=%.3f "
                  "GB/s=%.3f req/s=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f",
                  opt.mode.c_str(), static_cast<unsigned long long>(ok),
                  static_cast<unsigned long long>(errors), opt.concurrency,
                  static_cast<unsigned long long>(st.connects.load()),
                  static_cast<unsigned long long>(bytes), seconds, gbps, rps, p50, p90, p99, max);
  }
  std::cout << line << "\n";
  if (!st.first_error.empty()) std::cerr << "first error: " << st.first_error << "\n";
  return errors == 0 ? 0 : 1;
}
