#include "worker/trainer/runtime/cpu_threads.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>

namespace qlorad::trainer {
namespace {

TEST(CpuThreadsTest, CpuRunsTakeOneThreadAndGpuRanksShareTheHost) {
  EXPECT_EQ(CpuThreadsPerRank(/*cpu_device=*/true, 32, 1), 1);
  EXPECT_EQ(CpuThreadsPerRank(false, 32, 1), 32);
  EXPECT_EQ(CpuThreadsPerRank(false, 32, 2), 16);
  EXPECT_EQ(CpuThreadsPerRank(false, 30, 8), 3);  // rounded down: never more threads than cores
  EXPECT_EQ(CpuThreadsPerRank(false, 2, 8), 1);   // at least one
  EXPECT_EQ(CpuThreadsPerRank(false, 16, 0), 16);
}

TEST(CpuThreadsTest, HostCpusIsTheAffinityMask) {
  const int cpus = HostCpus();
  EXPECT_GE(cpus, 1);
  EXPECT_LE(cpus, static_cast<int>(std::thread::hardware_concurrency()));
}

TEST(CpuThreadsTest, LocalRanksComeFromTheLauncher) {
  ASSERT_EQ(setenv("QLORAD_LOCAL_WORLD_SIZE", "4", 1), 0);
  EXPECT_EQ(LocalRanks(), 4);
  ASSERT_EQ(setenv("QLORAD_LOCAL_WORLD_SIZE", "junk", 1), 0);
  const int fallback = LocalRanks();  // one per GPU of the host, at least 1
  ASSERT_EQ(unsetenv("QLORAD_LOCAL_WORLD_SIZE"), 0);
  EXPECT_GE(fallback, 1);
  EXPECT_EQ(LocalRanks(), fallback);
}

}  // namespace
}  // namespace qlorad::trainer
