#include "server/cpu_limit.hpp"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace layercache::server {
namespace {

// A whole number that is all of `text` (surrounding blanks and a newline allowed).
bool parse_number(std::string_view text, long long& out) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  if (text.empty()) return false;
  const auto* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && p == end;
}

// ceil(quota / period) within [1, cpus]; `cpus` when either makes no sense.
unsigned from_quota(long long quota, long long period, unsigned cpus) {
  if (quota <= 0 || period <= 0) return cpus;
  const long long allowed = (quota + period - 1) / period;
  return static_cast<unsigned>(std::clamp<long long>(allowed, 1, cpus));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

unsigned affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// This process's cgroup paths, from /proc/self/cgroup: v2 ("0::/…") and cgroup v1's cpu
// controller ("N:cpu,cpuacct:/…"); "" when absent.
struct own_cgroups {
  std::string v2;
  std::string v1_cpu;
};

own_cgroups read_own_cgroups() {
  own_cgroups out;
  std::istringstream lines(read_file("/proc/self/cgroup"));
  std::string line;
  for (int i = 0; i < 64 && std::getline(lines, line); ++i) {
    const auto a = line.find(':');
    const auto b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = "," + line.substr(a + 1, b - a - 1) + ",";
    if (line.starts_with("0::")) {
      out.v2 = line.substr(b + 1);
    } else if (controllers.find(",cpu,") != std::string::npos) {
      out.v1_cpu = line.substr(b + 1);
    }
  }
  return out;
}

// `path` and each of its ancestors up to "/", at most 32 levels.
template <typename Visit>
void up_the_tree(std::string path, const Visit& visit) {
  for (int depth = 0; depth < 32 && !path.empty(); ++depth) {
    visit(path);
    if (path == "/") break;
    const auto slash = path.rfind('/');
    path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
}

}  // namespace

unsigned cpus_allowed_by_cpu_max(std::string_view cpu_max, unsigned cpus) {
  const auto space = cpu_max.find(' ');
  if (space == std::string_view::npos) return cpus;
  long long quota = 0;
  long long period = 0;
  if (!parse_number(cpu_max.substr(0, space), quota) ||
      !parse_number(cpu_max.substr(space + 1), period)) {
    return cpus;  // "max …": no limit
  }
  return from_quota(quota, period, cpus);
}

unsigned cpus_allowed_by_cfs(std::string_view quota_us, std::string_view period_us, unsigned cpus) {
  long long quota = 0;
  long long period = 0;
  if (!parse_number(quota_us, quota) || !parse_number(period_us, period)) return cpus;
  return from_quota(quota, period, cpus);
}

unsigned default_worker_count() {
  unsigned cpus = affinity_cpus();
  const auto own = read_own_cgroups();
  // A limit may sit on any ancestor (a pod's on the pod, not the container): the smallest.
  up_the_tree(own.v2, [&cpus](const std::string& p) {
    const std::string text = read_file("/sys/fs/cgroup" + p + "/cpu.max");
    if (!text.empty()) cpus = cpus_allowed_by_cpu_max(text, cpus);
  });
  up_the_tree(own.v1_cpu, [&cpus](const std::string& p) {
    const std::string dir = "/sys/fs/cgroup/cpu" + p;
    cpus = cpus_allowed_by_cfs(read_file(dir + "/cpu.cfs_quota_us"),
                               read_file(dir + "/cpu.cfs_period_us"), cpus);
  });
  return cpus;
}

}  // namespace layercache::server
