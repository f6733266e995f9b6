// Reconciliation (issue 19): a worker that registers again reports the attempts it runs; the
// coordinator adopts the job's current attempt (after its own restart, or after the worker lost
// its connection) and stops any other, whose events and checkpoints then change nothing.
#include <gtest/gtest.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

// A job started on "host-gpu0" by a coordinator that is then gone (as after kill -9: the
// store keeps what it wrote). Returns the START order the worker got.
v1::Assignment StartThenLoseTheCoordinator(const std::string& db, v1::Job* job) {
  TestServer server(db);
  FakeWorker worker(server.channel(), "host-gpu0");
  worker.Connect();
  *job = server.Submit(SpecYaml());
  auto start = worker.NextOrder();
  EXPECT_TRUE(start.has_value());
  EXPECT_TRUE(
      worker.Report({MetricsEvent(*start, 1, 2.0), CheckpointEvent(*start, 1, "/ck/1")}).ok());
  worker.CloseAssignments();
  return start.value_or(v1::Assignment());
}

TEST(ReconcileTest, AfterARestartTheRunningAttemptIsAdoptedWithItsQueuedEvents) {
  TempDir dir;
  v1::Job job;
  const v1::Assignment start = StartThenLoseTheCoordinator(dir.File("qlorad.db"), &job);

  TestServer server(dir.File("qlorad.db"));
  FakeWorker worker(server.channel(), "host-gpu0");
  worker.Connect({start});
  EXPECT_EQ(worker.adopted(), 1);
  // What the worker queued while the coordinator was away is taken, not dropped.
  ASSERT_TRUE(
      worker.Report({MetricsEvent(start, 2, 1.5), CheckpointEvent(start, 2, "/ck/2")}).ok());
  EXPECT_EQ(server.Get(job.id()).last_step(), 2);
  // Past the adoption window (the heartbeat timeout, 30 s) with the worker beating: nothing is
  // requeued, and the adopted job is not taken for a leftover.
  server.clock().Advance(20s);
  EXPECT_TRUE(worker.Heartbeat({job.id()}));
  server.clock().Advance(20s);
  server.server().coordinator().Tick();
  EXPECT_TRUE(worker.Heartbeat({job.id()}));
  EXPECT_FALSE(worker.NextOrder(200ms).has_value()) << "no second START, no CANCEL";
  EXPECT_EQ(server.Get(job.id()).state(), v1::JOB_STATE_RUNNING);

  ASSERT_TRUE(worker.Report({DoneEvent(start, "/a"), ExitEvent(start, 0)}).ok());
  ASSERT_TRUE(server.WaitForState(job.id(), v1::JOB_STATE_COMPLETED));
  const v1::Job done = server.Get(job.id());
  EXPECT_EQ(done.attempt(), 0);
  EXPECT_EQ(done.restarts(), 0);
  EXPECT_EQ(done.adapter_path(), "/a");
}

TEST(ReconcileTest, CancelEndsAJobNoWorkerHasReportedSinceTheRestart) {
  TempDir dir;
  v1::Job job;
  const v1::Assignment start = StartThenLoseTheCoordinator(dir.File("qlorad.db"), &job);

  TestServer server(dir.File("qlorad.db"));
  v1::Job cancelled;
  ASSERT_TRUE(server.Cancel(job.id(), &cancelled).ok());
  EXPECT_EQ(server.Get(job.id()).state(), v1::JOB_STATE_CANCELLED) << "no exit will ever come";

  // Its trainer turns up later: it is stopped, and keeps the worker busy until it exits.
  FakeWorker worker(server.channel(), "host-gpu0");
  worker.Connect({start});
  EXPECT_EQ(worker.adopted(), 0);
  auto stop = worker.NextOrder();
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->kind(), v1::Assignment::KIND_CANCEL);
  EXPECT_EQ(stop->job_id(), job.id());
  EXPECT_EQ(stop->attempt(), 0);
  const v1::Job next = server.Submit(SpecYaml({.name = "next"}));
  EXPECT_FALSE(worker.NextOrder(200ms).has_value()) << "busy until the stopped trainer exits";
  ASSERT_TRUE(worker.Report({ExitEvent(start, 3, 0, "", /*cancelled=*/true)}).ok());
  auto started = worker.NextOrder();
  ASSERT_TRUE(started.has_value());
  EXPECT_EQ(started->job_id(), next.id());
  EXPECT_EQ(server.Get(job.id()).state(), v1::JOB_STATE_CANCELLED);
}

TEST(ReconcileTest, AWorkerThatReconnectsKeepsItsAttempt) {
  OneWorker env;
  const auto [job, start] = env.StartJob();
  env.worker.CloseAssignments();
  env.worker.Connect({start});  // the same coordinator; the worker's connection broke
  EXPECT_EQ(env.worker.adopted(), 1);
  EXPECT_FALSE(env.worker.NextOrder(200ms).has_value()) << "no requeue, no second START";
  ASSERT_TRUE(env.worker.Report({MetricsEvent(start, 5, 0.5)}).ok());
  const v1::Job running = env.server.Get(job.id());
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(running.attempt(), 0);
  EXPECT_EQ(running.last_step(), 5);
  EXPECT_EQ(running.worker_id(), env.worker.worker_id());
}

TEST(ReconcileTest, AStaleAttemptIsStoppedAndItsEventsAreFencedOut) {
  OneWorker env;
  const auto [job, start] = env.StartJob();
  ASSERT_TRUE(env.worker.Report({CheckpointEvent(start, 2, "/ck/a0/2")}).ok());
  // The worker goes silent: its attempt is lost (no restart spent) and runs elsewhere.
  env.server.clock().Advance(31s);
  env.server.server().coordinator().Tick();
  FakeWorker other(env.server.channel(), "host-gpu1");
  other.Connect();
  auto retry = other.NextOrder();
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(retry->attempt(), 1);
  EXPECT_EQ(retry->resume_from(), "/ck/a0/2");
  EXPECT_EQ(env.server.Get(job.id()).restarts(), 0);

  // The first worker comes back, still running attempt 0: it is told to stop that attempt.
  env.worker.CloseAssignments();
  env.worker.Connect({start});
  EXPECT_EQ(env.worker.adopted(), 0);
  auto stop = env.worker.NextOrder();
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->kind(), v1::Assignment::KIND_CANCEL);
  EXPECT_EQ(stop->attempt(), 0);
  // What attempt 0 says from here on changes nothing: not the steps, not the checkpoint the next
  // attempt resumes from, and its exit neither fails nor retries the job.
  ASSERT_TRUE(env.worker
                  .Report({MetricsEvent(start, 9, 0.1), CheckpointEvent(start, 9, "/ck/a0/9"),
                           ExitEvent(start, 3, 0, "", /*cancelled=*/true)})
                  .ok());
  v1::Job now = env.server.Get(job.id());
  EXPECT_EQ(now.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(now.attempt(), 1);
  EXPECT_NE(now.last_step(), 9);

  ASSERT_TRUE(other.Report({ExitEvent(*retry, 1)}).ok());  // attempt 1 crashes
  now = env.server.Get(job.id());
  EXPECT_EQ(now.attempt(), 2);
  EXPECT_EQ(now.restarts(), 1);
  std::optional<v1::Assignment> third = env.worker.NextOrder(1s);
  if (!third) third = other.NextOrder();
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->attempt(), 2);
  EXPECT_EQ(third->resume_from(), "/ck/a0/2");
}

}  // namespace
}  // namespace qlorad::server::testing
