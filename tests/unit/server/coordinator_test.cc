// Coordinator rules that need no network: how the outbox behaves when a stream breaks between
// writing an order and removing it, and where queued jobs stand in line.
#include "server/coordinator.h"

#include <gtest/gtest.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

// A coordinator on a fresh store, driven by hand (no tick thread).
std::unique_ptr<Coordinator> NewCoordinator(const TempDir& dir) {
  CoordinatorOptions options;
  options.db_path = dir.File("qlorad.db");
  auto coordinator = Coordinator::Create(options);
  EXPECT_TRUE(coordinator.ok()) << coordinator.status().ToString();
  return coordinator.ok() ? std::move(coordinator).value() : nullptr;
}

// A worker registered under `name` with its Assignments stream attached: its id and generation.
std::pair<std::string, uint64_t> AttachedWorker(Coordinator& c, const std::string& name) {
  v1::RegisterRequest registration;
  registration.set_name(name);
  auto registered = c.RegisterWorker(registration);
  EXPECT_TRUE(registered.ok());
  const std::string worker_id = registered.ok() ? registered->worker_id() : "";
  auto generation = c.AttachOrders(worker_id);
  EXPECT_TRUE(generation.ok());
  return {worker_id, generation.ok() ? *generation : 0};
}

TEST(CoordinatorTest, AnUnconfirmedStartIsNotRepeatedOnceItsAttemptEnded) {
  TempDir dir;
  auto coordinator = NewCoordinator(dir);
  ASSERT_TRUE(coordinator);
  Coordinator& c = *coordinator;
  auto [worker_id, generation] = AttachedWorker(c, "host-gpu0");
  auto job = c.SubmitJob(SpecYaml(), "alice");
  ASSERT_TRUE(job.ok());

  // The START went out but the stream broke before PopOrder: it stays in the outbox...
  auto first = c.PeekOrder(worker_id, generation, 1s);
  ASSERT_TRUE(first.ok() && first->has_value());
  ASSERT_EQ((*first)->attempt(), 0);
  c.DetachOrders(worker_id, generation);
  // ...and the worker, which did get it, reports that attempt's crash.
  v1::ReportEventsRequest report;
  report.set_worker_id(worker_id);
  *report.add_events() = ExitEvent(**first, 1);
  ASSERT_TRUE(c.ReportEvents(report).ok());

  // The next stream gets the retry, never the old START again.
  auto next_generation = c.AttachOrders(worker_id);
  ASSERT_TRUE(next_generation.ok());
  auto next = c.PeekOrder(worker_id, *next_generation, 1s);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->kind(), v1::Assignment::KIND_START);
  EXPECT_EQ((*next)->attempt(), 1);
  c.PopOrder(worker_id, *next_generation);
  auto nothing = c.PeekOrder(worker_id, *next_generation, 50ms);
  ASSERT_TRUE(nothing.ok());
  EXPECT_FALSE(nothing->has_value());
}

TEST(CoordinatorTest, QueuedJobsKnowTheirPlaceInLineAsItMoves) {
  TempDir dir;
  auto coordinator = NewCoordinator(dir);
  ASSERT_TRUE(coordinator);
  Coordinator& c = *coordinator;
  const auto place = [&](const std::string& id) {
    auto job = c.GetJob(id);
    EXPECT_TRUE(job.ok());
    return std::make_pair(job->queue_position(), job->queue_length());
  };
  // No worker yet: nobody is in line (the job waits for a worker, not for other jobs).
  auto running = c.SubmitJob(SpecYaml({.name = "running"}), "alice");
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(place(running->id()), std::make_pair(0, 0));

  auto [worker_id, generation] = AttachedWorker(c, "host-cpu");
  auto start = c.PeekOrder(worker_id, generation, 1s);
  ASSERT_TRUE(start.ok() && start->has_value());
  c.PopOrder(worker_id, generation);

  // The worker is busy: the next two wait in submit order; the submit answer says so already.
  auto second = c.SubmitJob(SpecYaml({.name = "second"}), "alice");
  auto third = c.SubmitJob(SpecYaml({.name = "third"}), "bob");
  ASSERT_TRUE(second.ok() && third.ok());
  EXPECT_EQ(third->queue_position(), 2);
  EXPECT_EQ(place(second->id()), std::make_pair(1, 2));
  EXPECT_EQ(place(third->id()), std::make_pair(2, 2));
  EXPECT_EQ(place(running->id()), std::make_pair(0, 0));

  // A higher priority job goes ahead of both.
  auto urgent = c.SubmitJob(SpecYaml({.name = "urgent", .priority = 90}), "carol");
  ASSERT_TRUE(urgent.ok());
  EXPECT_EQ(place(urgent->id()), std::make_pair(1, 3));
  EXPECT_EQ(place(third->id()), std::make_pair(3, 3));

  // Cancelling queued jobs moves the rest up at the next plan.
  ASSERT_TRUE(c.CancelJob(urgent->id()).ok());
  ASSERT_TRUE(c.CancelJob(second->id()).ok());
  c.Tick();
  EXPECT_EQ(place(third->id()), std::make_pair(1, 1));

  // The running job ends: the third starts and is no longer in line.
  v1::ReportEventsRequest report;
  report.set_worker_id(worker_id);
  *report.add_events() = DoneEvent(**start, "/tmp/adapter");
  *report.add_events() = ExitEvent(**start, 0);
  ASSERT_TRUE(c.ReportEvents(report).ok());
  auto third_now = c.GetJob(third->id());
  ASSERT_TRUE(third_now.ok());
  EXPECT_EQ(third_now->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(place(third->id()), std::make_pair(0, 0));
}

// Jobs of one priority submitted within the same millisecond still queue in submit order, not in
// the order of their random ids.
TEST(CoordinatorTest, JobsSubmittedInOneBurstQueueInSubmitOrder) {
  TempDir dir;
  auto coordinator = NewCoordinator(dir);
  ASSERT_TRUE(coordinator);
  Coordinator& c = *coordinator;
  auto [worker_id, generation] = AttachedWorker(c, "host-cpu");
  auto running = c.SubmitJob(SpecYaml({.name = "running"}), "alice");
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(c.PeekOrder(worker_id, generation, 1s).ok());
  c.PopOrder(worker_id, generation);

  constexpr int kBurst = 24;
  std::vector<std::string> ids;
  for (int i = 0; i < kBurst; ++i) {
    auto job = c.SubmitJob(SpecYaml({.name = "burst-" + std::to_string(i)}), "alice");
    ASSERT_TRUE(job.ok());
    ids.push_back(job->id());
  }
  for (int i = 0; i < kBurst; ++i) {
    auto job = c.GetJob(ids[i]);
    ASSERT_TRUE(job.ok());
    EXPECT_EQ(job->queue_position(), i + 1) << job->name();
    EXPECT_EQ(job->queue_length(), kBurst);
  }
}

}  // namespace
}  // namespace qlorad::server::testing
