// A coordinator restart: jobs survive in SQLite; those left RUNNING wait for their workers and,
// when none reports them within the heartbeat timeout, are requeued as a new attempt without
// spending a restart (or finish as CANCELLED when a cancel was pending); workers must register
// again.
#include <gtest/gtest.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

TEST(CoordinatorRestartTest, RunningJobsAreRequeuedAndHistoryKept) {
  TempDir dir;
  const std::string db = dir.File("qlorad.db");
  std::string running_id, cancelling_id, queued_id, done_id;
  std::string old_worker;
  {
    TestServer server(db);
    FakeWorker w0(server.channel(), "host-gpu0");
    FakeWorker w1(server.channel(), "host-gpu1");
    w0.Connect();
    done_id = server.Submit(SpecYaml({.name = "done"})).id();
    auto done = w0.NextOrder();
    ASSERT_TRUE(done.has_value());
    ASSERT_TRUE(
        w0.Report({MetricsEvent(*done, 1, 0.7), DoneEvent(*done, "/a"), ExitEvent(*done, 0)}).ok());
    running_id = server.Submit(SpecYaml({.name = "running"})).id();
    auto run = w0.NextOrder();
    ASSERT_TRUE(run.has_value());
    ASSERT_TRUE(w0.Report({MetricsEvent(*run, 3, 1.25), CheckpointEvent(*run, 3, "/ck/3")}).ok());
    w1.Connect();
    cancelling_id = server.Submit(SpecYaml({.name = "cancelling"})).id();
    ASSERT_TRUE(w1.NextOrder().has_value());
    v1::Job ignored;
    ASSERT_TRUE(server.Cancel(cancelling_id, &ignored).ok());
    queued_id = server.Submit(SpecYaml({.name = "queued", .gpus = 2})).id();
    old_worker = w0.worker_id();
    w0.CloseAssignments();
    w1.CloseAssignments();
  }

  TestServer server(db);
  const v1::Job waiting = server.Get(running_id);
  EXPECT_EQ(waiting.state(), v1::JOB_STATE_RUNNING) << "waits for its worker to report it";
  EXPECT_EQ(waiting.attempt(), 0);
  server.clock().Advance(31s);  // past the heartbeat timeout: nobody reported it
  ASSERT_TRUE(server.WaitForState(running_id, v1::JOB_STATE_QUEUED));
  const v1::Job running = server.Get(running_id);
  EXPECT_EQ(running.attempt(), 1);
  EXPECT_EQ(running.restarts(), 0);
  EXPECT_EQ(running.last_step(), 3);
  EXPECT_DOUBLE_EQ(running.last_loss(), 1.25);
  EXPECT_EQ(server.Get(cancelling_id).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(server.Get(queued_id).state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(server.Get(done_id).state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(server.Get(done_id).adapter_path(), "/a");

  EXPECT_FALSE([&] {
    v1::HeartbeatRequest request;
    request.set_worker_id(old_worker);
    v1::HeartbeatResponse response;
    grpc::ClientContext ctx;
    EXPECT_TRUE(
        v1::WorkerService::NewStub(server.channel())->Heartbeat(&ctx, request, &response).ok());
    return response.known();
  }()) << "workers of the previous coordinator must register again";

  FakeWorker worker(server.channel(), "host-gpu0");
  worker.Connect();
  auto resumed = worker.NextOrder();
  ASSERT_TRUE(resumed.has_value());
  EXPECT_EQ(resumed->job_id(), running_id);
  EXPECT_EQ(resumed->resume_from(), "/ck/3");
}

}  // namespace
}  // namespace qlorad::server::testing
