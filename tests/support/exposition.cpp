#include "tests/support/exposition.hpp"

#include <stdexcept>

#include "tests/support/process.hpp"

namespace layercache::testing {

std::vector<metric_sample> parse_exposition(std::string_view text) {
  std::vector<metric_sample> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line.front() == '#') continue;
    metric_sample s;
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = std::string(line.substr(0, i));
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const auto eq = line.find('=', i);
        if (eq == std::string_view::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          throw std::runtime_error("bad labels in: " + std::string(line));
        }
        const std::string key(line.substr(i, eq - i));
        std::string value;
        std::size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value += line[j] == 'n' ? '\n' : line[j];
          } else {
            value += line[j];
          }
        }
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') {
      throw std::runtime_error("not a sample: " + std::string(line));
    }
    const std::string value(line.substr(i + 1, line.find(' ', i + 1) - i - 1));
    if (value == "+Inf") {
      s.value = 1e308;
    } else {
      s.value = std::stod(value);
    }
    out.push_back(std::move(s));
  }
  return out;
}

namespace {
bool matches(const metric_sample& s, std::string_view name,
             const std::map<std::string, std::string>& labels) {
  if (s.name != name) return false;
  for (const auto& [k, v] : labels) {
    auto it = s.labels.find(k);
    if (it == s.labels.end() || it->second != v) return false;
  }
  return true;
}
}  // namespace

double metric_value(const std::vector<metric_sample>& samples, std::string_view name,
                    const std::map<std::string, std::string>& labels) {
  double sum = 0;
  for (const auto& s : samples) {
    if (matches(s, name, labels)) sum += s.value;
  }
  return sum;
}

bool has_metric(const std::vector<metric_sample>& samples, std::string_view name,
                const std::map<std::string, std::string>& labels) {
  for (const auto& s : samples) {
    if (matches(s, name, labels)) return true;
  }
  return false;
}

lint_result promtool_check_metrics(std::string_view text) {
  temp_dir dir("layercache-promtool");
  const auto file = dir.path() / "metrics.txt";
  write_file(file, text);
  const auto r = run_command({"sh", "-c", "promtool check metrics < '" + file.string() + "'"},
                             std::chrono::seconds(30));
  return lint_result{r.exit_code == 0 && r.output.find_first_not_of(" \n") == std::string::npos,
                     r.output};
}

}  // namespace layercache::testing
