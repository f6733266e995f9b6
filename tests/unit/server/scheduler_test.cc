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

// The store listens at rank 0's host, so the port is the one that worker holds free there; the
// coordinator's own guess only for a worker that reports none.
TEST(SchedulerTest, AGangMeetsOnThePortRank0sWorkerHolds) {
  int picked = 0;
  const PortPicker count_picks = [&](const std::string& host) {
    ++picked;
    return FixedPort(host);
  };
  std::vector<FreeWorker> free = {{"a0", "hostA", -1, -1, 41001}, {"a1", "hostA", -1, -1, 41002}};
  auto placements = PlanPlacements({{"gang", 50, 1, 2}}, free, 2, count_picks);
  ASSERT_EQ(placements.size(), 1u);
  EXPECT_EQ(placements[0].worker_ids, (std::vector<std::string>{"a0", "a1"}));
  EXPECT_EQ(placements[0].rendezvous, "hostA:41001");
  EXPECT_EQ(picked, 0);

  free = {{"a0", "hostA"}, {"a1", "hostA", -1, -1, 41002}};  // rank 0's worker reports no port
  placements = PlanPlacements({{"gang", 50, 1, 2}}, free, 2, count_picks);
  ASSERT_EQ(placements.size(), 1u);
  EXPECT_EQ(placements[0].rendezvous, "hostA:29500");
  EXPECT_EQ(picked, 1);
}

constexpr int64_t kGiB = int64_t{1} << 30;

// GPU memory: a job goes only where its estimate fits, the smallest such GPU first.
TEST(SchedulerTest, PlacesAJobOnTheSmallestGpuWithEnoughMemory) {
  const std::vector<FreeWorker> free = {
      {"big", "h1", 80 * kGiB}, {"small", "h1", 16 * kGiB}, {"mid", "h1", 24 * kGiB}};
  const std::vector<int64_t> registered = {80 * kGiB, 16 * kGiB, 24 * kGiB};
  QueuedJob job{"j", 50, 1, 1, 20 * kGiB};
  SchedulePlan plan = PlanSchedule({job}, free, registered, FixedPort);
  ASSERT_EQ(plan.placements.size(), 1u);
  EXPECT_EQ(plan.placements[0].worker_ids, (std::vector<std::string>{"mid"}));
  EXPECT_TRUE(plan.waiting.empty());

  // Two jobs: the larger one still finds the large GPU.
  plan = PlanSchedule({{"a", 50, 1, 1, 20 * kGiB}, {"b", 50, 2, 1, 70 * kGiB}}, free, registered,
                      FixedPort);
  ASSERT_EQ(plan.placements.size(), 2u);
  EXPECT_EQ(plan.placements[0].worker_ids, (std::vector<std::string>{"mid"}));
  EXPECT_EQ(plan.placements[1].worker_ids, (std::vector<std::string>{"big"}));
}

TEST(SchedulerTest, AJobNoWorkerHasTheMemoryForWaitsWithAReasonAndBlocksNobody) {
  const std::vector<FreeWorker> free = {{"w0", "h1", 16 * kGiB}, {"w1", "h1", 12 * kGiB}};
  const SchedulePlan plan =
      PlanSchedule({{"huge", 90, 1, 1, 40 * kGiB}, {"small", 10, 2, 1, 10 * kGiB}}, free,
                   {16 * kGiB, 12 * kGiB}, FixedPort);
  EXPECT_EQ(JobIds(plan.placements), (std::vector<std::string>{"small"}));
  ASSERT_EQ(plan.waiting.count("huge"), 1u);
  EXPECT_EQ(plan.waiting.at("huge"),
            "waiting for a worker with at least 40.0 GiB of GPU memory (its memory estimate); "
            "the largest registered GPU has 16.0 GiB");
}

TEST(SchedulerTest, AJobWhoseFittingWorkerIsBusyWaitsAndKeepsItsPlace) {
  // The 80 GiB worker is registered but busy: the job waits, and the small job behind it too.
  // A job behind them that no worker can take still says why.
  const SchedulePlan plan = PlanSchedule(
      {{"big", 90, 1, 1, 40 * kGiB}, {"small", 10, 2, 1, 1 * kGiB}, {"huge", 5, 3, 1, 100 * kGiB}},
      {{"w0", "h1", 16 * kGiB}}, {16 * kGiB, 80 * kGiB}, FixedPort);
  EXPECT_TRUE(plan.placements.empty());
  EXPECT_EQ(plan.waiting.at("big"),
            "waiting for a free worker with at least 40.0 GiB of GPU memory (its memory "
            "estimate)");
  EXPECT_EQ(plan.waiting.count("small"), 0u);
  EXPECT_EQ(plan.waiting.at("huge"),
            "waiting for a worker with at least 100.0 GiB of GPU memory (its memory estimate); "
            "the largest registered GPU has 80.0 GiB");
}

TEST(SchedulerTest, TheLineListsTheJobsLeftQueuedInTheOrderTheyWouldStart) {
  // One free worker of three registered: "first" starts; the rest wait in the scheduler's order
  // (priority, then age). The gang larger than the pool and the job no GPU has the memory for
  // wait for workers, not for other jobs: they are not in line.
  const SchedulePlan plan =
      PlanSchedule({{"low", 10, 1, 1},
                    {"first", 90, 5, 1},
                    {"gang", 90, 2, 4},
                    {"second", 50, 3, 1},
                    {"huge", 50, 4, 1, 100 * kGiB},
                    {"third", 50, 4, 1}},
                   {{"w0", "h1", 16 * kGiB}}, {16 * kGiB, 16 * kGiB, 16 * kGiB}, FixedPort);
  EXPECT_EQ(JobIds(plan.placements), (std::vector<std::string>{"first"}));
  EXPECT_EQ(plan.line, (std::vector<std::string>{"second", "third", "low"}));
}

TEST(SchedulerTest, AJobGoesOnlyToWorkersWhoseRootsAllowItsPaths) {
  // w0 refuses the job's paths: it goes to w1 although w0 comes first.
  std::vector<FreeWorker> workers = {{"w0", "h1", -1}, {"w1", "h1", -1}};
  QueuedJob job{"j", 50, 1, 1};
  job.refused_by = {"w0"};
  job.refusal = "model.path: /m is outside the folders this worker may read: /data (worker w0)";
  SchedulePlan plan = PlanScheduleOnWorkers({job}, workers, workers, FixedPort);
  ASSERT_EQ(plan.placements.size(), 1u);
  EXPECT_EQ(plan.placements[0].worker_ids, (std::vector<std::string>{"w1"}));

  // Only w0 is free: the job waits for w1 and keeps its place, holding back the job behind it.
  plan = PlanScheduleOnWorkers({job, {"behind", 10, 2, 1}}, {workers[0]}, workers, FixedPort);
  EXPECT_TRUE(plan.placements.empty());
  EXPECT_EQ(plan.line, (std::vector<std::string>{"j", "behind"}));
  EXPECT_EQ(plan.waiting.count("j"), 0u);

  // No registered worker allows it (w1 left): skipped with the refusal, blocking nobody.
  plan = PlanScheduleOnWorkers({job, {"behind", 10, 2, 1}}, {workers[0]}, {workers[0]}, FixedPort);
  EXPECT_EQ(JobIds(plan.placements), (std::vector<std::string>{"behind"}));
  EXPECT_EQ(plan.waiting.at("j"),
            "waiting for a worker whose roots allow its paths: " + job.refusal);
}

TEST(SchedulerTest, NoRegisteredWorkerMeansNobodyIsInLine) {
  const SchedulePlan plan = PlanSchedule({{"a", 50, 1, 1}}, {}, std::vector<int64_t>{}, FixedPort);
  EXPECT_TRUE(plan.placements.empty());
  EXPECT_TRUE(plan.line.empty());
}

TEST(SchedulerTest, CpuWorkersAndJobsWithoutAnEstimateAreNotMemoryChecked) {
  // A CPU worker (-1) takes a job with an estimate; a job without one (0) takes a small GPU.
  SchedulePlan plan =
      PlanSchedule({{"a", 50, 1, 1, 40 * kGiB}}, {{"cpu", "h1", -1}}, {-1}, FixedPort);
  EXPECT_EQ(JobIds(plan.placements), (std::vector<std::string>{"a"}));
  plan = PlanSchedule({{"b", 50, 1, 1, 0}}, {{"gpu", "h1", 1 * kGiB}}, {1 * kGiB}, FixedPort);
  EXPECT_EQ(JobIds(plan.placements), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(plan.waiting.empty());
}

TEST(SchedulerTest, AGangNeedsEnoughWorkersWithTheMemory) {
  const std::vector<FreeWorker> free = {
      {"w0", "h1", 80 * kGiB}, {"w1", "h1", 16 * kGiB}, {"w2", "h1", 80 * kGiB}};
  const std::vector<int64_t> registered = {80 * kGiB, 16 * kGiB, 80 * kGiB};
  SchedulePlan plan = PlanSchedule({{"g", 50, 1, 2, 40 * kGiB}}, free, registered, FixedPort);
  ASSERT_EQ(plan.placements.size(), 1u);
  EXPECT_EQ(plan.placements[0].worker_ids, (std::vector<std::string>{"w0", "w2"}));
  plan = PlanSchedule({{"g", 50, 1, 3, 40 * kGiB}}, free, registered, FixedPort);
  EXPECT_TRUE(plan.placements.empty());
  EXPECT_EQ(plan.waiting.at("g"),
            "waiting for 3 workers with at least 40.0 GiB of GPU memory (its memory estimate); 2 "
            "registered have that much");
}

// Free memory, where a worker measured it, is what a job finds: it decides before the total.
TEST(SchedulerTest, FreeMemoryWhereKnownDecidesFitAndBestFit) {
  // By total, "busy" would fit and be the best fit; other processes hold most of it. Of the two
  // that have the room free, the one with less of it is taken.
  const std::vector<FreeWorker> free = {{"busy", "h1", 24 * kGiB, 8 * kGiB},
                                        {"roomy", "h1", 80 * kGiB, 30 * kGiB},
                                        {"idle", "h1", 40 * kGiB, 40 * kGiB}};
  SchedulePlan plan = PlanScheduleOnWorkers({{"j", 50, 1, 1, 20 * kGiB}}, free, free, FixedPort);
  ASSERT_EQ(plan.placements.size(), 1u);
  EXPECT_EQ(plan.placements[0].worker_ids, (std::vector<std::string>{"roomy"}));  // least room

  const std::vector<FreeWorker> one = {{"busy", "h1", 24 * kGiB, 8 * kGiB}};
  plan = PlanScheduleOnWorkers({{"j", 50, 1, 1, 20 * kGiB}}, one, one, FixedPort);
  EXPECT_TRUE(plan.placements.empty());
  EXPECT_EQ(plan.waiting.at("j"),
            "waiting for a worker with at least 20.0 GiB of GPU memory (its memory estimate); "
            "the registered GPU with the most free memory has 8.0 GiB free of 24.0 GiB");

  // A worker without a free figure keeps the old rule and the old reason.
  const std::vector<FreeWorker> older = {{"older", "h1", 16 * kGiB}};
  plan = PlanScheduleOnWorkers({{"j", 50, 1, 1, 20 * kGiB}}, older, older, FixedPort);
  EXPECT_EQ(plan.waiting.at("j"),
            "waiting for a worker with at least 20.0 GiB of GPU memory (its memory estimate); "
            "the largest registered GPU has 16.0 GiB");
}

TEST(SchedulerTest, AWorkerWhoseTrainerRefusedTheJobForMemoryIsNotTriedAgain) {
  const std::vector<FreeWorker> workers = {{"a", "h1", 80 * kGiB, 80 * kGiB},
                                           {"b", "h1", 80 * kGiB, 80 * kGiB}};
  QueuedJob job{"j", 50, 1, 1, 20 * kGiB};
  job.memory_refused_by = {"a"};
  EXPECT_EQ(WorkersThatCouldTake(job, workers), 1);
  SchedulePlan plan = PlanScheduleOnWorkers({job}, workers, workers, FixedPort);
  ASSERT_EQ(plan.placements.size(), 1u);
  EXPECT_EQ(plan.placements[0].worker_ids, (std::vector<std::string>{"b"}));

  // Only "a" is registered: no worker could take it (the requeue decision fails the job), and
  // while it waits it says why.
  EXPECT_EQ(WorkersThatCouldTake(job, {workers[0]}), 0);
  plan = PlanScheduleOnWorkers({job}, {workers[0]}, {workers[0]}, FixedPort);
  EXPECT_TRUE(plan.placements.empty());
  EXPECT_EQ(plan.waiting.at("j"),
            "waiting for a worker with at least 20.0 GiB of GPU memory (its memory estimate); "
            "its trainer refused it for memory on every registered GPU");
}

TEST(SchedulerTest, PickLocalFreePortReturnsABindablePort) {
  const int port = PickLocalFreePort("127.0.0.1");
  EXPECT_GT(port, 0);
  EXPECT_LT(port, 65536);
}

}  // namespace
}  // namespace qlorad::server
