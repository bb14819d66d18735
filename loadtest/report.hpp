// layercache-bench's reports: what a run saw (loadtest/load.hpp), as the lines or the JSON
// document it prints, and the percentiles they show. scripts/compare.sh, scripts/bench.sh and
// docs/benchmarks.md read these formats: keep them as they are.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "loadtest/load.hpp"

namespace layercache::loadtest {

// Percentiles of a sample (milliseconds): the value at rank round(p/100 · (n − 1)) of the sorted
// sample, as layercache-bench always reported them; all zero when it is empty.
struct latency_summary {
  std::size_t n = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
};
[[nodiscard]] latency_summary summarize(std::vector<double> samples);

// One line per scenario (and a "total" line for a mix): `<name> ok=… errors=… conc=… conns=…
// bytes=… seconds=… GB/s=… req/s=… p50_ms=… p90_ms=… p99_ms=… max_ms=… requests=…
// ttfb_p50_ms=… ttfb_p90_ms=… ttfb_p99_ms=… ttfb_max_ms=…` and, for pulls, `pulls=…
// pulls_failed=… pull_p50_ms=… pull_max_ms=…`. GB/s is 10^9 bytes/s; p* without a prefix are
// total latencies.
[[nodiscard]] std::string text_report(const run_result& r);
// {"seconds":…, "scenarios":[{name, kind, counts, gb_per_s, requests_per_s,
//   "ttfb_ms":{p50,p90,p99,max}, "total_ms":{…}, "pull_ms":{…}, first_error}, …]}
[[nodiscard]] std::string json_report(const run_result& r);

}  // namespace layercache::loadtest
