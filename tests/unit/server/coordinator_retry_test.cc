// Coordinator::RetryJob without a network: which states may be retried, what the new job keeps
// of the original (spec, owner, priority, a link back) and where its first attempt starts from.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/coordinator.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;

class CoordinatorRetryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorOptions options;
    options.db_path = dir_.File("qlorad.db");
    auto created = Coordinator::Create(options);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    c_ = std::move(created).value();
    v1::RegisterRequest registration;
    registration.set_name("host-cpu");
    auto registered = c_->RegisterWorker(registration);
    ASSERT_TRUE(registered.ok());
    worker_id_ = registered->worker_id();
    auto generation = c_->AttachOrders(worker_id_);
    ASSERT_TRUE(generation.ok());
    generation_ = *generation;
  }

  // The next order the worker gets, removed from its outbox.
  v1::Assignment NextOrder() {
    auto order = c_->PeekOrder(worker_id_, generation_, 5s);
    EXPECT_TRUE(order.ok() && order->has_value());
    if (!order.ok() || !order->has_value()) return {};
    c_->PopOrder(worker_id_, generation_);
    return **order;
  }

  void Report(const v1::TrainerEvent& event) {
    v1::ReportEventsRequest report;
    report.set_worker_id(worker_id_);
    *report.add_events() = event;
    ASSERT_TRUE(c_->ReportEvents(report).ok());
  }

  // A job of alice's (priority 70, no restarts) that checkpointed at step 4, then crashed.
  std::string FailedJob() {
    auto job = c_->SubmitJob(SpecYaml({.priority = 70, .max_restarts = 0}), "alice");
    EXPECT_TRUE(job.ok()) << job.status().ToString();
    const v1::Assignment start = NextOrder();
    Report(MetricsEvent(start, 4, 1.5));
    Report(CheckpointEvent(start, 4, "/runs/tiny/checkpoints/attempt-0/step-4"));
    Report(ExitEvent(start, 1, 0, "boom"));
    EXPECT_EQ(c_->GetJob(job->id())->state(), v1::JOB_STATE_FAILED);
    return job->id();
  }

  TempDir dir_;
  std::unique_ptr<Coordinator> c_;
  std::string worker_id_;
  uint64_t generation_ = 0;
};

TEST_F(CoordinatorRetryTest, AFailedJobIsRetriedFromItsCheckpointAsTheOwnersJob) {
  const std::string original = FailedJob();
  auto retry = c_->RetryJob(original, /*from_scratch=*/false, "root");
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_NE(retry->id(), original);
  EXPECT_EQ(retry->retry_of(), original);
  EXPECT_EQ(retry->owner(), "alice") << "an admin's retry stays the owner's job";
  EXPECT_EQ(retry->priority(), 70);
  EXPECT_EQ(retry->spec_yaml(), c_->GetJob(original)->spec_yaml());
  EXPECT_EQ(retry->restarts(), 0);

  const v1::Assignment start = NextOrder();
  EXPECT_EQ(start.job_id(), retry->id());
  EXPECT_EQ(start.resume_from(), "/runs/tiny/checkpoints/attempt-0/step-4");
  EXPECT_EQ(start.attempt(), 1) << "after the original's attempt 0: a checkpoint folder of its own";
  EXPECT_EQ(c_->GetJob(retry->id())->retry_of(), original) << "stored, not only returned";
}

TEST_F(CoordinatorRetryTest, FromScratchStartsAtStepZero) {
  const std::string original = FailedJob();
  auto retry = c_->RetryJob(original, /*from_scratch=*/true, "alice");
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  const v1::Assignment start = NextOrder();
  EXPECT_EQ(start.job_id(), retry->id());
  EXPECT_EQ(start.resume_from(), "");
}

TEST_F(CoordinatorRetryTest, OnlyFailedOrCancelledJobsAreRetried) {
  auto running = c_->SubmitJob(SpecYaml(), "alice");
  ASSERT_TRUE(running.ok());
  NextOrder();
  ASSERT_EQ(c_->GetJob(running->id())->state(), v1::JOB_STATE_RUNNING);
  auto refused = c_->RetryJob(running->id(), false, "alice");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("is RUNNING"));
  EXPECT_THAT(refused.status().message(), HasSubstr("cancel it first"));

  // Queued behind the running one, then cancelled: retried, from step 0 (no checkpoint).
  auto queued = c_->SubmitJob(SpecYaml(), "alice");
  ASSERT_TRUE(queued.ok());
  ASSERT_TRUE(c_->CancelJob(queued->id()).ok());
  auto retry = c_->RetryJob(queued->id(), false, "alice");
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->state(), v1::JOB_STATE_QUEUED);

  auto unknown = c_->RetryJob("job-nope", false, "alice");
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace qlorad::server::testing
