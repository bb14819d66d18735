#include "loadtest/report.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <utility>

namespace layercache::loadtest {
namespace {

scenario_result merged(const run_result& r) {
  scenario_result t;
  t.name = "total";
  for (const auto& s : r.scenarios) {
    t.concurrency += s.concurrency;
    t.count += s.count;
    t.requests += s.requests;
    t.ok += s.ok;
    t.errors += s.errors;
    t.bytes += s.bytes;
    t.connections += s.connections;
    t.ttfb_ms.insert(t.ttfb_ms.end(), s.ttfb_ms.begin(), s.ttfb_ms.end());
    t.total_ms.insert(t.total_ms.end(), s.total_ms.begin(), s.total_ms.end());
    if (t.first_error.empty()) t.first_error = s.first_error;
  }
  t.seconds = r.seconds;
  return t;
}

std::string text_line(const scenario_result& s) {
  const double gbps = s.seconds > 0 ? static_cast<double>(s.bytes) / s.seconds / 1e9 : 0;
  const double rps = s.seconds > 0 ? static_cast<double>(s.ok) / s.seconds : 0;
  const auto total = summarize(s.total_ms);
  const auto ttfb = summarize(s.ttfb_ms);
  char line[1024];
  std::snprintf(line, sizeof line,
                "%-6s ok=%llu errors=%llu conc=%u conns=%llu bytes=%llu seconds=%.3f GB/s=%.3f "
                "req/s=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%llu "
                "ttfb_p50_ms=%.3f ttfb_p90_ms=%.3f ttfb_p99_ms=%.3f ttfb_max_ms=%.3f",
                s.name.c_str(), static_cast<unsigned long long>(s.ok),
                static_cast<unsigned long long>(s.errors), s.concurrency,
                static_cast<unsigned long long>(s.connections),
                static_cast<unsigned long long>(s.bytes), s.seconds, gbps, rps, total.p50,
                total.p90, total.p99, total.max, static_cast<unsigned long long>(s.requests),
                ttfb.p50, ttfb.p90, ttfb.p99, ttfb.max);
  std::string out = line;
  if (s.pulls()) {
    const auto pulls = summarize(s.pull_ms);
    std::snprintf(line, sizeof line,
                  " pulls=%llu pulls_failed=%llu pull_p50_ms=%.3f pull_max_ms=%.3f",
                  static_cast<unsigned long long>(s.pulls_ok),
                  static_cast<unsigned long long>(s.pulls_failed), pulls.p50, pulls.max);
    out += line;
  }
  return out;
}

boost::json::object json_latency(const std::vector<double>& samples) {
  const auto l = summarize(samples);
  return {{"n", l.n}, {"p50", l.p50}, {"p90", l.p90}, {"p99", l.p99}, {"max", l.max}};
}

boost::json::object json_scenario(const scenario_result& s) {
  const double gbps = s.seconds > 0 ? static_cast<double>(s.bytes) / s.seconds / 1e9 : 0;
  const double rps = s.seconds > 0 ? static_cast<double>(s.ok) / s.seconds : 0;
  boost::json::object o{{"name", s.name},
                        {"kind", kind_name(s.kind)},
                        {"count", s.count},
                        {"concurrency", s.concurrency},
                        {"requests", s.requests},
                        {"ok", s.ok},
                        {"errors", s.errors},
                        {"connections", s.connections},
                        {"bytes", s.bytes},
                        {"seconds", s.seconds},
                        {"gb_per_s", gbps},
                        {"requests_per_s", rps},
                        {"ttfb_ms", json_latency(s.ttfb_ms)},
                        {"total_ms", json_latency(s.total_ms)}};
  if (s.pulls()) {
    o["pulls"] = s.pulls_ok;
    o["pulls_failed"] = s.pulls_failed;
    o["pull_ms"] = json_latency(s.pull_ms);
  }
  if (!s.first_error.empty()) o["first_error"] = s.first_error;
  return o;
}

}  // namespace

latency_summary summarize(std::vector<double> samples) {
  latency_summary out;
  out.n = samples.size();
  if (samples.empty()) return out;
  std::sort(samples.begin(), samples.end());
  const auto at = [&](double p) {
    const auto rank =
        static_cast<std::size_t>(std::llround(p / 100.0 * static_cast<double>(samples.size() - 1)));
    return samples[std::min(rank, samples.size() - 1)];
  };
  out.p50 = at(50);
  out.p90 = at(90);
  out.p99 = at(99);
  out.max = samples.back();
  return out;
}

std::string text_report(const run_result& r) {
  std::string out;
  for (const auto& s : r.scenarios) out += text_line(s) + "\n";
  if (r.scenarios.size() > 1) out += text_line(merged(r)) + "\n";
  return out;
}

std::string json_report(const run_result& r) {
  boost::json::array list;
  for (const auto& s : r.scenarios) list.push_back(json_scenario(s));
  boost::json::object o{{"seconds", r.seconds}, {"scenarios", std::move(list)}};
  if (r.scenarios.size() > 1) o["total"] = json_scenario(merged(r));
  return boost::json::serialize(o) + "\n";
}

}  // namespace layercache::loadtest
