// How many worker threads `server.threads: 0` means: one per CPU the process may use — the
// CPU limit of its cgroup (a container's `limits.cpu`, rounded up), else the CPUs it may run
// on. Without this a pod limited to 2 CPUs on a 64-core node would start 64 workers.
#pragma once

#include <string_view>

namespace layercache::server {

// The CPUs a cgroup v2 `cpu.max` allows ("150000 100000" → 2; "max 100000" → none: `cpus`),
// never more than `cpus` and at least 1. Text that cannot be read says nothing (`cpus`). Pure.
[[nodiscard]] unsigned cpus_allowed_by_cpu_max(std::string_view cpu_max, unsigned cpus);

// The same for cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us (a quota of -1: none).
[[nodiscard]] unsigned cpus_allowed_by_cfs(std::string_view quota_us, std::string_view period_us,
                                           unsigned cpus);

// The worker count for `threads: 0` on this machine: the CPUs in this process's affinity mask,
// lowered by the CPU limit of its cgroup and every ancestor (v2, from /proc/self/cgroup), or
// by cgroup v1's CFS quota.
[[nodiscard]] unsigned default_worker_count();

}  // namespace layercache::server
