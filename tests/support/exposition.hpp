// Reading the Prometheus text exposition in tests: samples by name and labels, and promtool's
// lint of a whole scrape.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace layercache::testing {

struct metric_sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Every sample line of an exposition (comments skipped). Throws std::runtime_error on a line
// that is not a sample.
[[nodiscard]] std::vector<metric_sample> parse_exposition(std::string_view text);

// The sum of the samples called `name` whose labels include all of `labels`; 0 when none.
[[nodiscard]] double metric_value(const std::vector<metric_sample>& samples, std::string_view name,
                                  const std::map<std::string, std::string>& labels = {});

// Whether any sample is called `name` and carries all of `labels`.
[[nodiscard]] bool has_metric(const std::vector<metric_sample>& samples, std::string_view name,
                              const std::map<std::string, std::string>& labels = {});

// Runs `promtool check metrics` on `text`; returns its output, and `ok` whether it passed
// with nothing to report.
struct lint_result {
  bool ok = false;
  std::string output;
};
[[nodiscard]] lint_result promtool_check_metrics(std::string_view text);

}  // namespace layercache::testing
