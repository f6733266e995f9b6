// Workers that go silent, re-register, or lose their stream: their jobs are retried the same
// way a crash is, and the worker learns it was forgotten.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

TEST(HeartbeatTest, SilentWorkerIsDroppedAndItsJobRetriedElsewhere) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"), /*heartbeat_timeout=*/300ms);
  FakeWorker silent(server.channel(), "host-gpu0");
  silent.Connect();
  EXPECT_EQ(silent.heartbeat_interval_ms(), 100);
  const v1::Job job = server.Submit(SpecYaml({.max_restarts = 2}));
  auto first = silent.NextOrder();
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(silent.Report({CheckpointEvent(*first, 4, "/ck/4")}).ok());

  // No heartbeat from here on: once the timeout has passed, a tick drops the worker and the job
  // goes back to the queue as attempt 1.
  server.clock().Advance(250ms);
  server.server().coordinator().Tick();
  EXPECT_EQ(server.Get(job.id()).attempt(), 0) << "dropped before its timeout";
  server.clock().Advance(100ms);
  server.server().coordinator().Tick();
  ASSERT_EQ(server.Get(job.id()).attempt(), 1);
  EXPECT_EQ(server.Get(job.id()).state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(server.Get(job.id()).restarts(), 0) << "a lost worker is not the trainer's failure";
  EXPECT_FALSE(silent.Heartbeat()) << "the coordinator forgot the worker";
  auto end = silent.StreamEnd();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->error_code(), grpc::StatusCode::NOT_FOUND);

  FakeWorker healthy(server.channel(), "host-gpu1");
  healthy.Connect();
  auto second = healthy.NextOrder();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->job_id(), job.id());
  EXPECT_EQ(second->attempt(), 1);
  EXPECT_EQ(second->resume_from(), "/ck/4");
}

TEST(HeartbeatTest, HeartbeatsKeepAWorkerAndItsJob) {
  OneWorker env(/*heartbeat_timeout=*/300ms);
  TestServer& server = env.server;
  const auto [job, start] = env.StartJob();
  // 2.5 s in all, far past the timeout, but never 300 ms without a heartbeat.
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(env.worker.Heartbeat());
    server.clock().Advance(250ms);
    server.server().coordinator().Tick();
  }
  const v1::Job now = server.Get(job.id());
  EXPECT_EQ(now.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(now.attempt(), 0);
}

TEST(HeartbeatTest, ReRegisteringByNameRequeuesWhatTheOldEntryRan) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"));
  FakeWorker before(server.channel(), "host-gpu0");
  before.Connect();
  const v1::Job job = server.Submit(SpecYaml());
  ASSERT_TRUE(before.NextOrder().has_value());

  FakeWorker after(server.channel(), "host-gpu0");  // the agent restarted
  after.Connect();
  EXPECT_NE(after.worker_id(), before.worker_id());
  EXPECT_FALSE(before.Heartbeat());
  auto restart = after.NextOrder();
  ASSERT_TRUE(restart.has_value());
  EXPECT_EQ(restart->job_id(), job.id());
  EXPECT_EQ(restart->attempt(), 1);
}

TEST(HeartbeatTest, OrdersWaitForAWorkerWhoseStreamDropped) {
  OneWorker env;
  TestServer& server = env.server;
  FakeWorker& worker = env.worker;
  const auto [job, start] = env.StartJob();
  worker.CloseAssignments();
  v1::Job cancelled;
  ASSERT_TRUE(server.Cancel(job.id(), &cancelled).ok());
  worker.OpenAssignments();  // the order was kept for the reconnecting stream
  auto cancel = worker.NextOrder();
  // Delivery is at least once: when the stream broke right as START was written, the new
  // stream repeats it (same job and attempt), and the agent ignores the repeat.
  if (cancel.has_value() && cancel->kind() == v1::Assignment::KIND_START) {
    EXPECT_EQ(cancel->job_id(), start.job_id());
    EXPECT_EQ(cancel->attempt(), start.attempt());
    cancel = worker.NextOrder();
  }
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->kind(), v1::Assignment::KIND_CANCEL);
  EXPECT_EQ(cancel->job_id(), job.id());
}

TEST(HeartbeatTest, ALeftoverTrainerIsCancelledAndKeepsItsWorkerBusy) {
  OneWorker env;
  // The worker still runs a trainer from before (e.g. before a coordinator restart).
  ASSERT_TRUE(env.worker.Heartbeat({"job-left0ver"}));
  auto cancel = env.worker.NextOrder();
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->kind(), v1::Assignment::KIND_CANCEL);
  EXPECT_EQ(cancel->job_id(), "job-left0ver");

  const v1::Job job = env.server.Submit(SpecYaml());
  EXPECT_FALSE(env.worker.NextOrder(200ms).has_value()) << "busy with the leftover";
  ASSERT_TRUE(env.worker.Heartbeat({"job-left0ver"}));
  EXPECT_FALSE(env.worker.NextOrder(100ms).has_value()) << "cancelled once, not on every beat";

  ASSERT_TRUE(env.worker.Heartbeat({}));  // the leftover is gone
  auto start = env.worker.NextOrder();
  ASSERT_TRUE(start.has_value());
  EXPECT_EQ(start->kind(), v1::Assignment::KIND_START);
  EXPECT_EQ(start->job_id(), job.id());
  // A heartbeat that lists the job it was given is not a leftover.
  ASSERT_TRUE(env.worker.Heartbeat({job.id()}));
  EXPECT_FALSE(env.worker.NextOrder(100ms).has_value());
}

}  // namespace
}  // namespace qlorad::server::testing
