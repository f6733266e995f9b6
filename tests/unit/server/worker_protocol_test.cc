// The worker protocol end to end through a real gRPC channel: a fake worker registers, takes
// START orders, reports trainer events, and the job reaches the state the rules say.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;

bool HasLogContaining(const std::vector<v1::LogLine>& lines, const std::string& source,
                      const std::string& text) {
  for (const auto& l : lines) {
    if (l.source() == source && l.message().find(text) != std::string::npos) return true;
  }
  return false;
}

class WorkerProtocolTest : public ::testing::Test {
 protected:
  OneWorker env_;
  TestServer& server_ = env_.server;
  FakeWorker& worker_ = env_.worker;
};

TEST_F(WorkerProtocolTest, SubmitReturnsAQueuedJobBuiltFromTheSpec) {
  const std::string spec =
      SpecYaml({.name = "alpaca", .priority = 70, .max_restarts = 2, .gpus = 1, .max_steps = 42});
  const v1::Job job = server_.Submit(spec);
  EXPECT_THAT(job.id(), ::testing::MatchesRegex("job-[0-9a-f]{8}"));
  EXPECT_EQ(job.name(), "alpaca");
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.priority(), 70);
  EXPECT_EQ(job.max_restarts(), 2);
  EXPECT_EQ(job.total_steps(), 42);
  EXPECT_EQ(job.gpus(), 1);
  EXPECT_EQ(job.spec_yaml(), spec);
  EXPECT_GT(job.created_unix_ms(), 0);
  EXPECT_EQ(server_.Get(job.id()).name(), "alpaca");
}

TEST_F(WorkerProtocolTest, BadSpecIsInvalidArgumentNamingTheField) {
  grpc::ClientContext ctx;
  v1::SubmitJobRequest request;
  request.set_spec_yaml(SpecYaml() + "train_extra: 1\n");
  v1::Job job;
  grpc::Status status = server_.jobs().SubmitJob(&ctx, request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("train_extra"));
}

TEST_F(WorkerProtocolTest, JobCompletesAfterDoneAndExitZero) {
  const auto [job, start] = env_.StartJob(SpecYaml({.max_steps = 3}));
  EXPECT_EQ(start.kind(), v1::Assignment::KIND_START);
  EXPECT_EQ(start.job_id(), job.id());
  EXPECT_EQ(start.attempt(), 0);
  EXPECT_EQ(start.rank(), 0);
  EXPECT_EQ(start.world_size(), 1);
  EXPECT_EQ(start.spec_yaml(), job.spec_yaml());
  EXPECT_THAT(start.rendezvous(), ::testing::MatchesRegex("127\\.0\\.0\\.1:[0-9]+"));
  EXPECT_EQ(start.resume_from(), "");
  const v1::Job running = server_.Get(job.id());
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(running.worker_id(), worker_.worker_id());

  ASSERT_TRUE(worker_
                  .Report({MetricsEvent(start, 1, 2.5), MetricsEvent(start, 2, 2.0),
                           MetricsEvent(start, 3, 1.5)})
                  .ok());
  const v1::Job mid = server_.Get(job.id());
  EXPECT_EQ(mid.last_step(), 3);
  EXPECT_DOUBLE_EQ(mid.last_loss(), 1.5);
  EXPECT_EQ(mid.state(), v1::JOB_STATE_RUNNING);

  ASSERT_TRUE(worker_.Report({DoneEvent(start, "/runs/tiny/adapter"), ExitEvent(start, 0)}).ok());
  const v1::Job done = server_.Get(job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(done.adapter_path(), "/runs/tiny/adapter");
  EXPECT_GT(done.finished_unix_ms(), 0);
  EXPECT_EQ(done.error(), "");

  const auto logs = server_.Logs(job.id());
  EXPECT_TRUE(HasLogContaining(logs, "coordinator", "assigned to worker host-gpu0"));
  EXPECT_TRUE(HasLogContaining(logs, "coordinator", "completed"));
}

TEST_F(WorkerProtocolTest, CrashRetriesFromLastCheckpointThenFailsAfterMaxRestarts) {
  const auto [job, first] = env_.StartJob(SpecYaml({.max_restarts = 1}));
  ASSERT_TRUE(worker_
                  .Report({MetricsEvent(first, 1, 3.0), CheckpointEvent(first, 1, "/ck/step-1"),
                           MetricsEvent(first, 2, 2.9), ExitEvent(first, 1, 0, "oops")})
                  .ok());

  auto second = worker_.NextOrder();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->kind(), v1::Assignment::KIND_START);
  EXPECT_EQ(second->attempt(), 1);
  EXPECT_EQ(second->resume_from(), "/ck/step-1");
  EXPECT_EQ(server_.Get(job.id()).attempt(), 1);
  EXPECT_EQ(server_.Get(job.id()).restarts(), 1);

  ASSERT_TRUE(worker_.Report({ExitEvent(*second, -1, 9, "Killed\nlast line")}).ok());
  const v1::Job failed = server_.Get(job.id());
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.attempt(), 1);
  EXPECT_THAT(failed.error(), HasSubstr("signal 9"));
  EXPECT_THAT(failed.error(), HasSubstr("last line"));
  EXPECT_FALSE(worker_.NextOrder(200ms).has_value()) << "no third attempt";

  const auto logs = server_.Logs(job.id());
  EXPECT_TRUE(HasLogContaining(logs, "coordinator", "retrying as attempt 1"));
  EXPECT_TRUE(HasLogContaining(logs, "coordinator", "failed"));
}

TEST_F(WorkerProtocolTest, BadInputExitFailsAtOnceWithTheTrainersError) {
  const auto [job, start] = env_.StartJob(SpecYaml({.max_restarts = 3}));
  ASSERT_TRUE(
      worker_
          .Report({ErrorEvent(start, "data.path: no such file", "data.path"), ExitEvent(start, 2)})
          .ok());
  const v1::Job failed = server_.Get(job.id());
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.attempt(), 0);
  EXPECT_THAT(failed.error(), HasSubstr("data.path: no such file"));
  EXPECT_FALSE(worker_.NextOrder(200ms).has_value()) << "bad input is never retried";
}

TEST_F(WorkerProtocolTest, EventsOfAnEndedAttemptAreIgnored) {
  const auto [job, first] = env_.StartJob();
  ASSERT_TRUE(worker_.Report({ExitEvent(first, 1)}).ok());
  auto second = worker_.NextOrder();
  ASSERT_TRUE(second.has_value());
  // A late line from attempt 0 must not move attempt 1's job, nor end it.
  ASSERT_TRUE(
      worker_
          .Report({MetricsEvent(first, 99, 0.1), DoneEvent(first, "/stale"), ExitEvent(first, 0)})
          .ok());
  const v1::Job now = server_.Get(job.id());
  EXPECT_EQ(now.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(now.attempt(), 1);
  EXPECT_NE(now.last_step(), 99);
  EXPECT_EQ(now.adapter_path(), "");
}

TEST_F(WorkerProtocolTest, CancelRunningJobSendsCancelAndEndsOnExit) {
  const auto [job, start] = env_.StartJob();
  v1::Job after_cancel;
  ASSERT_TRUE(server_.Cancel(job.id(), &after_cancel).ok());
  EXPECT_EQ(after_cancel.state(), v1::JOB_STATE_RUNNING) << "running until the trainer exits";
  auto cancel = worker_.NextOrder();
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->kind(), v1::Assignment::KIND_CANCEL);
  EXPECT_EQ(cancel->job_id(), job.id());
  EXPECT_EQ(cancel->attempt(), start.attempt());

  ASSERT_TRUE(worker_.Report({ExitEvent(start, -1, 15, "", /*cancelled=*/true)}).ok());
  EXPECT_EQ(server_.Get(job.id()).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(worker_.NextOrder(200ms).has_value()) << "a cancelled job is not retried";
}

TEST_F(WorkerProtocolTest, ReportFromUnknownWorkerIsNotFound) {
  FakeWorker stranger(server_.channel(), "nobody");
  v1::Assignment fake;
  fake.set_job_id("job-00000000");
  EXPECT_EQ(stranger.Report({ExitEvent(fake, 0)}).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Jobs submitted while no worker is connected.
TEST(QueueTest, CancelQueuedJobAtOnceThenRefuseTerminal) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"));
  const v1::Job job = server.Submit(SpecYaml());
  v1::Job cancelled;
  ASSERT_TRUE(server.Cancel(job.id(), &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(server.Get(job.id()).state(), v1::JOB_STATE_CANCELLED);

  v1::Job again;
  EXPECT_EQ(server.Cancel(job.id(), &again).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(server.Cancel("job-00000000", &again).error_code(), grpc::StatusCode::NOT_FOUND);

  // A cancelled job never starts, even when a worker comes.
  FakeWorker worker(server.channel(), "host-gpu0");
  worker.Connect();
  EXPECT_FALSE(worker.NextOrder(200ms).has_value());
}

TEST(QueueTest, FreedWorkerTakesTheNextJobInPriorityOrder) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"));
  const v1::Job low = server.Submit(SpecYaml({.name = "low", .priority = 10}));
  const v1::Job high = server.Submit(SpecYaml({.name = "high", .priority = 90}));
  const v1::Job mid = server.Submit(SpecYaml({.name = "mid", .priority = 50}));
  FakeWorker worker(server.channel(), "host-gpu0");
  worker.Connect();
  for (const auto* expected : {&high, &mid, &low}) {
    auto start = worker.NextOrder();
    ASSERT_TRUE(start.has_value());
    EXPECT_EQ(start->job_id(), expected->id());
    EXPECT_FALSE(worker.NextOrder(50ms).has_value()) << "one job per worker at a time";
    ASSERT_TRUE(worker.Report({DoneEvent(*start, "/a"), ExitEvent(*start, 0)}).ok());
  }
}

}  // namespace
}  // namespace qlorad::server::testing
