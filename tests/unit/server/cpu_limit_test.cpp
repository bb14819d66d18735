#include "server/cpu_limit.hpp"

#include <gtest/gtest.h>

namespace layercache::server {
namespace {

TEST(CpuLimit, ACgroupV2QuotaIsRoundedUpToWholeCpus) {
  EXPECT_EQ(cpus_allowed_by_cpu_max("200000 100000\n", 64), 2u);
  EXPECT_EQ(cpus_allowed_by_cpu_max("150000 100000\n", 64), 2u);
  EXPECT_EQ(cpus_allowed_by_cpu_max("10000 100000\n", 64), 1u);  // 100m: one worker
}

TEST(CpuLimit, NoQuotaLeavesTheCpusTheProcessMayRunOn) {
  EXPECT_EQ(cpus_allowed_by_cpu_max("max 100000\n", 8), 8u);
  EXPECT_EQ(cpus_allowed_by_cpu_max("", 8), 8u);
  EXPECT_EQ(cpus_allowed_by_cpu_max("garbage", 8), 8u);
  EXPECT_EQ(cpus_allowed_by_cpu_max("0 100000", 8), 8u);
}

TEST(CpuLimit, AQuotaAboveTheCpusIsTheCpus) {
  EXPECT_EQ(cpus_allowed_by_cpu_max("1600000 100000", 4), 4u);
}

TEST(CpuLimit, CgroupV1CfsQuota) {
  EXPECT_EQ(cpus_allowed_by_cfs("250000\n", "100000\n", 16), 3u);
  EXPECT_EQ(cpus_allowed_by_cfs("-1\n", "100000\n", 16), 16u);
  EXPECT_EQ(cpus_allowed_by_cfs("", "", 16), 16u);
}

TEST(CpuLimit, ThisMachineGetsAtLeastOneWorker) { EXPECT_GE(default_worker_count(), 1u); }

}  // namespace
}  // namespace layercache::server
