// Placement rules: priority then submit time, gangs all-or-nothing, the queue's head keeps its
// place, impossible gangs do not block, ranks of a gang share a host when they can.
#include "server/scheduler.h"

#include <gtest/gtest.h>

namespace qlorad::server {
namespace {

int FixedPort(const std::string&) {
  return 29500;
}

std::vector<FreeWorker> Workers(int n, const std::string& host = "h1") {
  std::vector<FreeWorker> w;
  for (int i = 0; i < n; ++i) w.push_back({"w" + std::to_string(i), host});
  return w;
}

std::vector<std::string> JobIds(const std::vector<Placement>& placements) {
  std::vector<std::string> ids;
  for (const auto& p : placements) ids.push_back(p.job_id);
  return ids;
}

TEST(SchedulerTest, HigherPriorityFirstThenOlderFirst) {
  std::vector<QueuedJob> queued = {{"old-low", 10, 100, 1},
                                   {"new-high", 90, 300, 1},
                                   {"old-high", 90, 200, 1},
                                   {"mid", 50, 50, 1}};
  auto placements = PlanPlacements(queued, Workers(3), 3, FixedPort);
  EXPECT_EQ(JobIds(placements), (std::vector<std::string>{"old-high", "new-high", "mid"}));
}

TEST(SchedulerTest, GangStartsOnAllItsWorkersAtOnceWithRanksAndRendezvous) {
  auto placements = PlanPlacements({{"gang", 50, 1, 3}}, Workers(4), 4, FixedPort);
  ASSERT_EQ(placements.size(), 1u);
  EXPECT_EQ(placements[0].worker_ids.size(), 3u);
  EXPECT_EQ(placements[0].rendezvous, "h1:29500");
  std::set<std::string> distinct(placements[0].worker_ids.begin(), placements[0].worker_ids.end());
  EXPECT_EQ(distinct.size(), 3u);
}

TEST(SchedulerTest, GangNeverStartsPartiallyAndHoldsItsPlace) {
  // Two free of four registered: the 3-GPU job waits, and so does the smaller job behind it.
  auto placements =
      PlanPlacements({{"gang", 90, 1, 3}, {"small", 10, 2, 1}}, Workers(2), 4, FixedPort);
  EXPECT_TRUE(placements.empty());
}

TEST(SchedulerTest, GangLargerThanEveryWorkerDoesNotBlockTheQueue) {
  auto placements =
      PlanPlacements({{"huge", 90, 1, 8}, {"small", 10, 2, 1}}, Workers(2), 2, FixedPort);
  EXPECT_EQ(JobIds(placements), (std::vector<std::string>{"small"}));
}

TEST(SchedulerTest, EachWorkerTakesOneJob) {
  auto placements =
      PlanPlacements({{"a", 50, 1, 1}, {"b", 50, 2, 2}, {"c", 50, 3, 1}}, Workers(3), 3, FixedPort);
  ASSERT_EQ(JobIds(placements), (std::vector<std::string>{"a", "b"}));
  std::set<std::string> used;
  for (const auto& p : placements) used.insert(p.worker_ids.begin(), p.worker_ids.end());
  EXPECT_EQ(used.size(), 3u);
}

TEST(SchedulerTest, GangPrefersTheHostWithTheMostFreeWorkers) {
  std::vector<FreeWorker> free = {{"a0", "hostA"}, {"b0", "hostB"}, {"b1", "hostB"}};
  auto placements = PlanPlacements({{"gang", 50, 1, 2}}, free, 3, FixedPort);
  ASSERT_EQ(placements.size(), 1u);
  EXPECT_EQ(placements[0].worker_ids, (std::vector<std::string>{"b0", "b1"}));
  EXPECT_EQ(placements[0].rendezvous, "hostB:29500");
}

TEST(SchedulerTest, PickLocalFreePortReturnsABindablePort) {
  const int port = PickLocalFreePort("127.0.0.1");
  EXPECT_GT(port, 0);
  EXPECT_LT(port, 65536);
}

}  // namespace
}  // namespace qlorad::server
