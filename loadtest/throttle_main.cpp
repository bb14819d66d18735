// layercache-throttle: a throttling TCP relay (loadtest/throttle.hpp) in front of a local
// server, so that it behaves like a distant one. Prints the port it listens on, then relays
// until SIGINT/SIGTERM or --max-seconds. SIGUSR1 prints the counters as one JSON line on stdout;
// they are also printed on stderr at exit.
//
//   layercache-throttle --target HOST:PORT [--listen ADDR:PORT] [--rtt-ms N] [--bandwidth 25MB]
//                       [--connect-delay-ms N] [--window 8MiB] [--idle-seconds S]
//                       [--max-seconds S]
//
// --rtt-ms: round trip added (half of it each way; default 0). --bandwidth: bytes/s per
// connection and direction (sizes as in the config: 25MB = 25·10^6, 0 = no cap).
// --connect-delay-ms: wait before dialling the target (default: the RTT, as a handshake takes).
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>

#include "config/config.hpp"
#include "loadtest/throttle.hpp"

namespace {

using layercache::loadtest::throttle;
using layercache::loadtest::throttle_counters;
using layercache::loadtest::throttle_options;

bool split_host_port(const std::string& text, std::string& host, std::uint16_t& port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = text.substr(0, colon);
  try {
    const auto p = std::stoul(text.substr(colon + 1));
    if (p > 65535) return false;
    port = static_cast<std::uint16_t>(p);
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

std::string json(const throttle_counters& c) {
  char line[256];
  std::snprintf(line, sizeof line,
                "{\"connections\":%llu,\"active\":%llu,\"failed_connects\":%llu,"
                "\"bytes_to_target\":%llu,\"bytes_from_target\":%llu}",
                static_cast<unsigned long long>(c.connections),
                static_cast<unsigned long long>(c.active),
                static_cast<unsigned long long>(c.failed_connects),
                static_cast<unsigned long long>(c.bytes_to_target),
                static_cast<unsigned long long>(c.bytes_from_target));
  return line;
}

int usage() {
  std::cerr << "usage: layercache-throttle --target HOST:PORT [--listen ADDR:PORT] [--rtt-ms N]\n"
               "                           [--bandwidth 25MB] [--connect-delay-ms N] "
               "[--window 8MiB]\n"
               "                           [--idle-seconds S] [--max-seconds S]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  throttle_options o;
  double rtt_ms = 0;
  std::optional<double> connect_delay_ms;
  double max_seconds = 3600;
  bool have_target = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    try {
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
        return argv[++i];
      };
      auto size_value = [&]() -> std::uint64_t {
        const auto v = value();
        const auto n = layercache::config::parse_size(v);
        // NOLINTNEXTLINE(performance-inefficient-string-concatenation): once, then throws
        if (!n) throw std::invalid_argument(arg + ": bad size " + v);
        return *n;
      };
      if (arg == "--target") {
        if (!split_host_port(value(), o.target_host, o.target_port)) return usage();
        have_target = true;
      } else if (arg == "--listen") {
        if (!split_host_port(value(), o.listen_address, o.listen_port)) return usage();
      } else if (arg == "--rtt-ms") {
        rtt_ms = std::stod(value());
      } else if (arg == "--connect-delay-ms") {
        connect_delay_ms = std::stod(value());
      } else if (arg == "--bandwidth") {
        o.bytes_per_second = size_value();
      } else if (arg == "--window") {
        o.window = static_cast<std::size_t>(size_value());
      } else if (arg == "--idle-seconds") {
        o.idle_timeout = std::chrono::seconds(std::stoul(value()));
      } else if (arg == "--max-seconds") {
        max_seconds = std::stod(value());
      } else {
        std::cerr << "unknown argument " << arg << "\n";
        return usage();
      }
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      return 2;
    }
  }
  if (!have_target || rtt_ms < 0 || max_seconds <= 0 || o.window == 0 ||
      (connect_delay_ms && *connect_delay_ms < 0)) {
    return usage();
  }
  using micros = std::chrono::microseconds;
  o.delay = micros(static_cast<micros::rep>(rtt_ms * 1000 / 2));
  o.connect_delay = micros(static_cast<micros::rep>(connect_delay_ms.value_or(rtt_ms) * 1000));

  // Blocked before the relay's thread starts, so only sigtimedwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGINT, SIGTERM, SIGUSR1}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  try {
    throttle relay(o);
    std::cout << relay.port() << std::endl;
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(max_seconds));
    while (std::chrono::steady_clock::now() < deadline) {
      const timespec tick{1, 0};
      const int s = sigtimedwait(&signals, nullptr, &tick);
      if (s == SIGUSR1) {
        std::cout << json(relay.counters()) << std::endl;
      } else if (s == SIGINT || s == SIGTERM || (s < 0 && errno != EAGAIN && errno != EINTR)) {
        break;  // asked to stop, or sigtimedwait failed
      }
    }
    std::cerr << "layercache-throttle: " << json(relay.counters()) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "layercache-throttle: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
