// layercached: wires config → server, and turns signals into a graceful stop.
#include <malloc.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "config/config.hpp"
#include "daemon/config_watch.hpp"
#include "daemon/sd_notify.hpp"
#include "daemon/shutdown_watchdog.hpp"
#include "log/log.hpp"
#include "server/cpu_limit.hpp"
#include "server/server.hpp"

namespace {

// Past timeouts.shutdown, the server closes what is left (up to 5 s more); closing the store
// and saving profiles get the rest of this before the watchdog ends the process.
constexpr std::chrono::seconds shutdown_grace{15};

// How often --watch-config reads the config file again.
constexpr std::chrono::seconds watch_interval{2};

// Loads `config_path` and applies it; a bad file is refused and the running config kept.
// systemd hears of it (Type=notify) whatever set it off.
void reload(layercache::server::server& srv, const std::string& config_path) {
  layercache::daemon::notify_service_manager(layercache::daemon::reloading_state());
  try {
    const auto next = layercache::config::load_file(config_path);
    (void)srv.reload(next);
  } catch (const std::exception& e) {
    srv.reload_failed();
    layercache::log::error("main", "reload refused, keeping the running config: ", e.what());
  }
  layercache::daemon::notify_service_manager("READY=1");
}

// Takes signals until SIGTERM or SIGINT: SIGHUP reloads `config_path` (nothing to reload for
// the built-in config). With `watch`, a change of the file's content reloads it too.
void serve_until_stopped(layercache::server::server& srv, const sigset_t& signals,
                         const std::string& config_path,
                         std::optional<layercache::daemon::config_watch>& watch) {
  const timespec interval{.tv_sec = watch_interval.count(), .tv_nsec = 0};
  for (;;) {
    int sig = -1;
    if (watch) {
      sig = sigtimedwait(&signals, nullptr, &interval);  // -1: none within the interval
    } else if (sigwait(&signals, &sig) != 0) {
      sig = -1;
    }
    if (sig < 0) {
      if (watch && watch->changed()) {
        layercache::log::info("main", config_path, " changed: reloading");
        reload(srv, config_path);
      }
      continue;
    }
    if (sig != SIGHUP) {
      // sigdescr_np: strsignal's text ("Terminated"), without its static buffer (the I/O
      // threads are running).
      const char* name = sigdescr_np(sig);
      layercache::log::info("main", name != nullptr ? name : "signal", ": draining");
      return;
    }
    if (config_path.empty()) {
      layercache::log::warn("main", "SIGHUP: running the built-in config; nothing to reload");
      continue;
    }
    layercache::log::info("main", "SIGHUP: reloading ", config_path);
    if (watch) (void)watch->changed();  // what SIGHUP loads is not a change to load again
    reload(srv, config_path);
  }
}

constexpr std::string_view usage =
    "usage: layercached [--config FILE [--watch-config]]\n"
    "                                        run (default: the built-in configuration);\n"
    "                                        --watch-config reloads FILE when it changes\n"
    "       layercached --check-config FILE  validate FILE and exit\n"
    "       layercached --print-default-config\n"
    "       layercached --version\n";

layercache::log::level to_log_level(layercache::config::log_level l) {
  using layercache::config::log_level;
  switch (l) {
    case log_level::debug:
      return layercache::log::level::debug;
    case log_level::info:
      return layercache::log::level::info;
    case log_level::warn:
      return layercache::log::level::warn;
    case log_level::error:
      return layercache::log::level::error;
  }
  return layercache::log::level::info;
}

struct arguments {
  std::string config_path;
  bool watch_config = false;
};

// The command line: the arguments to run with, or the exit status of a command that ends here
// (--check-config, --version, usage errors, ...).
std::variant<arguments, int> parse_arguments(int argc, char** argv) {
  namespace config = layercache::config;
  arguments out;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if ((arg == "--config" || arg == "-c") && i + 1 < argc) {
      out.config_path = argv[++i];
    } else if (arg == "--watch-config") {
      out.watch_config = true;
    } else if (arg == "--check-config" && i + 1 < argc) {
      try {
        (void)config::load_file(argv[++i]);
        std::cout << argv[i] << ": OK\n";
        return 0;
      } catch (const std::exception& e) {
        std::cerr << e.what() << '\n';
        return 1;
      }
    } else if (arg == "--print-default-config") {
      std::cout << config::default_yaml();
      return 0;
    } else if (arg == "--version") {
      std::cout << "layercached 0.1.0\n";
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    } else {
      std::cerr << "unknown argument: " << arg << "\n" << usage;
      return 2;
    }
  }
  if (out.watch_config && out.config_path.empty()) {
    std::cerr << "layercached: --watch-config needs --config FILE\n" << usage;
    return 2;
  }
  return out;
}

// glibc makes up to 8 malloc arenas per core, one per thread that allocates at once, and keeps
// the free memory of each: chunk-sized buffers allocated on one thread (a fill's, a block read
// on the blocking pool) and freed on another leave holes in many arenas. One arena per CPU the
// process may use (at least 2) gave the herd of 100 streams a median of 71.5 MiB beyond the
// caches against 82 (6 runs each) and warm pulls ~30 % less CPU, with cold paths level
// (docs/benchmarks.md, "one malloc arena per CPU"). Set
// before any thread starts; MALLOC_ARENA_MAX in the environment is left to decide.
void limit_malloc_arenas() {
#ifdef __GLIBC__
  // Both calls are safe here only: main calls this first, before any thread starts.
  // NOLINTNEXTLINE(concurrency-mt-unsafe): no thread yet
  if (std::getenv("MALLOC_ARENA_MAX") != nullptr) return;
  const unsigned arenas = std::max(2U, layercache::server::default_worker_count());
  (void)::mallopt(M_ARENA_MAX, static_cast<int>(arenas));  // NOLINT(concurrency-mt-unsafe): same
#endif
}

}  // namespace

int main(int argc, char** argv) {
  limit_malloc_arenas();
  namespace config = layercache::config;
  auto parsed = parse_arguments(argc, argv);
  const auto* args = std::get_if<arguments>(&parsed);
  if (args == nullptr) return *std::get_if<int>(&parsed);
  const auto& [config_path, watch_config] = *args;
  config::config cfg;
  // Read before the config is loaded: a change in between is then seen as one.
  std::optional<layercache::daemon::config_watch> watch;
  if (watch_config) watch.emplace(config_path);
  try {
    cfg = config_path.empty() ? config::load_string(config::default_yaml(), "<built-in config>")
                              : config::load_file(config_path);
  } catch (const std::exception& e) {
    std::cerr << "layercached: " << e.what() << '\n';
    return 1;
  }
  layercache::log::set_level(to_log_level(cfg.log.level));

  // Signals are taken synchronously by this thread; workers never see them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::optional<layercache::daemon::shutdown_watchdog> watchdog;
  try {
    auto srv = std::make_unique<layercache::server::server>(cfg);
    srv->start();
    layercache::log::info("main", "layercached ready (",
                          config_path.empty() ? "built-in config" : config_path, ")");
    layercache::daemon::notify_service_manager("READY=1");  // the listeners accept from here on
    serve_until_stopped(*srv, signals, config_path, watch);
    layercache::daemon::notify_service_manager("STOPPING=1");
    watchdog.emplace(std::chrono::duration_cast<std::chrono::milliseconds>(
                         cfg.server.timeouts.shutdown + shutdown_grace),
                     "draining connections");
    srv->stop();
    watchdog->phase("closing the store");
    srv.reset();
    watchdog->finish();
  } catch (const std::exception& e) {
    layercache::log::error("main", e.what());
    return 1;
  }
  return 0;
}
