#include "client/cli/job_text.h"

#include <gtest/gtest.h>

namespace qlorad::cli {
namespace {

constexpr int64_t kNow = 1'764'088'200'000;  // 2025-11-25 16:30:00 UTC

qlorad::v1::Job RunningJob() {
  qlorad::v1::Job job;
  job.set_id("job-1a2b");
  job.set_name("llama3-alpaca");
  job.set_state(qlorad::v1::JOB_STATE_RUNNING);
  job.set_priority(50);
  job.set_attempt(1);
  job.set_max_restarts(3);
  job.set_worker_id("gpu0");
  job.set_created_unix_ms(kNow - 5 * 60'000);
  job.set_started_unix_ms(kNow - 4 * 60'000);
  job.set_last_step(40);
  job.set_total_steps(100);
  job.set_last_loss(2.34119);
  job.set_gpus(1);
  return job;
}

qlorad::v1::Job QueuedJob() {
  qlorad::v1::Job job;
  job.set_id("job-ff");
  job.set_name("tiny");
  job.set_state(qlorad::v1::JOB_STATE_QUEUED);
  job.set_total_steps(20);
  job.set_created_unix_ms(kNow - 7'000);
  return job;
}

TEST(JobStateName, DropsThePrefix) {
  EXPECT_EQ(JobStateName(qlorad::v1::JOB_STATE_RUNNING), "RUNNING");
  EXPECT_EQ(JobStateName(qlorad::v1::JOB_STATE_CANCELLED), "CANCELLED");
  EXPECT_EQ(JobStateName(static_cast<qlorad::v1::JobState>(42)), "STATE_42");
}

TEST(ParseJobState, AnyCase) {
  EXPECT_EQ(ParseJobState("running"), qlorad::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(ParseJobState("Failed"), qlorad::v1::JOB_STATE_FAILED);
  EXPECT_EQ(ParseJobState("CANCELLED"), qlorad::v1::JOB_STATE_CANCELLED);
}

TEST(ParseJobState, UnknownOrUnspecifiedIsNothing) {
  EXPECT_FALSE(ParseJobState("bogus").has_value());
  EXPECT_FALSE(ParseJobState("unspecified").has_value());
  EXPECT_FALSE(ParseJobState("").has_value());
}

TEST(IsTerminal, OnlyTheEndStates) {
  EXPECT_FALSE(IsTerminal(qlorad::v1::JOB_STATE_QUEUED));
  EXPECT_FALSE(IsTerminal(qlorad::v1::JOB_STATE_RUNNING));
  EXPECT_TRUE(IsTerminal(qlorad::v1::JOB_STATE_COMPLETED));
  EXPECT_TRUE(IsTerminal(qlorad::v1::JOB_STATE_FAILED));
  EXPECT_TRUE(IsTerminal(qlorad::v1::JOB_STATE_CANCELLED));
}

TEST(FormatJobTable, ColumnsAsWideAsTheirWidestCell) {
  EXPECT_EQ(FormatJobTable({RunningJob(), QueuedJob()}, kNow),
            "ID        NAME           STATE    STEP/TOTAL  LOSS    WORKER  AGE\n"
            "job-1a2b  llama3-alpaca  RUNNING  40/100      2.3412  gpu0    5m\n"
            "job-ff    tiny           QUEUED   0/20        -       -       7s\n");
}

TEST(FormatJobTable, HeaderOnlyWhenEmpty) {
  EXPECT_EQ(FormatJobTable({}, kNow), "ID  NAME  STATE  STEP/TOTAL  LOSS  WORKER  AGE\n");
}

TEST(FormatJobDetails, EveryFieldErrorIncluded) {
  qlorad::v1::Job job = RunningJob();
  job.set_state(qlorad::v1::JOB_STATE_FAILED);
  job.set_finished_unix_ms(kNow - 60'000);
  job.set_error("data.path: no such file: data/train.jsonl");
  job.set_restarts(1);
  job.set_owner("alice");
  EXPECT_EQ(FormatJobDetails(job, kNow),
            "id        job-1a2b\n"
            "name      llama3-alpaca\n"
            "state     FAILED\n"
            "step      40/100\n"
            "loss      2.3412\n"
            "attempt   1 (1 of 3 restarts used)\n"
            "priority  50\n"
            "gpus      1\n"
            "owner     alice\n"
            "worker    gpu0\n"
            "created   2025-11-25 16:25:00 UTC (5m ago)\n"
            "started   2025-11-25 16:26:00 UTC\n"
            "finished  2025-11-25 16:29:00 UTC\n"
            "adapter   -\n"
            "error     data.path: no such file: data/train.jsonl\n");
}

TEST(FormatJobDetails, ARetryNamesItsOriginalAfterTheOwner) {
  qlorad::v1::Job job = RunningJob();
  job.set_owner("alice");
  EXPECT_EQ(FormatJobDetails(job, kNow).find("retry of"), std::string::npos);
  job.set_retry_of("job-0f0f");
  EXPECT_NE(FormatJobDetails(job, kNow).find("owner     alice\nretry of  job-0f0f\nworker"),
            std::string::npos)
      << FormatJobDetails(job, kNow);
}

TEST(FormatJobDetails, MultiLineErrorsStayInTheirColumn) {
  qlorad::v1::Job job = QueuedJob();
  job.set_error("trainer exited with code 1\nstderr:\nTraceback");
  const std::string details = FormatJobDetails(job, kNow);
  EXPECT_TRUE(
      details.ends_with("error     trainer exited with code 1\n"
                        "          stderr:\n"
                        "          Traceback\n"))
      << details;
}

TEST(FormatFinalState, CompletedNamesTheAdapter) {
  qlorad::v1::Job job = RunningJob();
  job.set_state(qlorad::v1::JOB_STATE_COMPLETED);
  job.set_last_step(100);
  job.set_adapter_path("/runs/llama3-alpaca/adapter");
  EXPECT_EQ(FormatFinalState(job),
            "job job-1a2b COMPLETED at step 100/100 (loss 2.3412)\n"
            "adapter written to /runs/llama3-alpaca/adapter\n");
}

TEST(FormatFinalState, FailedPrintsTheError) {
  qlorad::v1::Job job = QueuedJob();
  job.set_state(qlorad::v1::JOB_STATE_FAILED);
  job.set_error("model.path: no config.json in /models/x");
  EXPECT_EQ(FormatFinalState(job),
            "job job-ff FAILED\nerror: model.path: no config.json in /models/x\n");
  job.clear_error();
  EXPECT_EQ(FormatFinalState(job), "job job-ff FAILED\nerror: (no error reported)\n");
}

TEST(FormatFinalState, CancelledIsOneLine) {
  qlorad::v1::Job job = RunningJob();
  job.set_state(qlorad::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(FormatFinalState(job), "job job-1a2b CANCELLED at step 40/100 (loss 2.3412)\n");
}

TEST(FormatLogLine, TimeLevelSourceRankMessage) {
  qlorad::v1::LogLine line;
  line.set_unix_ms(kNow + 1'123);
  line.set_level("info");
  line.set_source("trainer");
  line.set_rank(0);
  line.set_message("loading model");
  EXPECT_EQ(FormatLogLine(line), "2025-11-25 16:30:01.123  info     trainer[0]  loading model");
  line.set_level("warning");
  line.set_source("worker");
  EXPECT_EQ(FormatLogLine(line), "2025-11-25 16:30:01.123  warning  worker[0]  loading model");
}

}  // namespace
}  // namespace qlorad::cli
