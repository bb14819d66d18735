// The runner: runs a plan (loadtest/scenario.hpp) against a registry or mirror — its clients,
// their requests and their timing — and gathers what it saw. Requests go through
// loadtest/client.hpp (HTTP/1.1 over plain TCP or TLS with keep-alive connections, Beast, C++20
// coroutines, one thread); loadtest/report.hpp turns the results into text or JSON.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loadtest/scenario.hpp"

namespace layercache::loadtest {

// What one scenario did. Latencies are in milliseconds, of successful requests only:
// time to first byte = request written → first body byte (or the header, for an empty body);
// total = request written → last body byte. A pull's time runs from its manifest request to
// its last blob.
struct scenario_result {
  std::string name;
  scenario_kind kind = scenario_kind::full;
  unsigned concurrency = 0;
  std::uint64_t count = 0;     // as asked
  std::uint64_t requests = 0;  // finished (ok + errors)
  std::uint64_t ok = 0;
  std::uint64_t errors = 0;
  std::uint64_t bytes = 0;        // body bytes received, failed requests included
  std::uint64_t connections = 0;  // opened
  std::uint64_t pulls_ok = 0;     // full pulls of images
  std::uint64_t pulls_failed = 0;
  double seconds = 0;  // first request started → last client done
  std::vector<double> ttfb_ms;
  std::vector<double> total_ms;
  std::vector<double> pull_ms;
  std::string first_error;
  [[nodiscard]] bool pulls() const {
    return kind == scenario_kind::full && pulls_ok + pulls_failed > 0;
  }
};

struct run_result {
  std::vector<scenario_result> scenarios;
  double seconds = 0;
};

// Runs every scenario of `p` at once until each has done its count or max_seconds have passed
// (requests in flight then get at most timeout_seconds more). Before the clock starts, the
// images of `ranges` scenarios are resolved to their layers and blobs of unknown size are
// asked with HEAD. Throws std::runtime_error when that setup fails (no such host, an image
// that is not there, a CA file that cannot be read, a TLS handshake that fails in setup);
// failures during the run are counted, never thrown.
[[nodiscard]] run_result run_plan(const plan& p);

}  // namespace layercache::loadtest
