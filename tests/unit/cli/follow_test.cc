// The parts of `watch` that outlive a coordinator restart: which steps are new after a reconnect,
// how long to wait between tries, and the JSON lines a script sees meanwhile.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "client/cli/errors.h"
#include "client/cli/follow_notes.h"
#include "client/cli/json_output.h"
#include "client/cli/reconnect.h"
#include "client/cli/step_cursor.h"

namespace qlorad::cli {
namespace {

qlorad::v1::StepMetrics Step(int64_t step, int32_t rank = 0, int32_t attempt = 0) {
  qlorad::v1::StepMetrics m;
  m.set_step(step);
  m.set_rank(rank);
  m.set_attempt(attempt);
  return m;
}

TEST(StepCursor, AReopenedStreamRepeatsNothing) {
  StepCursor cursor(0);
  EXPECT_EQ(cursor.ResumeFrom(), 0);
  EXPECT_TRUE(cursor.IsNew(Step(1)));
  EXPECT_TRUE(cursor.IsNew(Step(1, 1)));
  EXPECT_TRUE(cursor.IsNew(Step(2)));
  // Rank 1 is behind: resume from its last step; what rank 0 already showed is skipped.
  EXPECT_EQ(cursor.ResumeFrom(), 1);
  EXPECT_FALSE(cursor.IsNew(Step(1)));
  EXPECT_FALSE(cursor.IsNew(Step(1, 1)));
  EXPECT_FALSE(cursor.IsNew(Step(2)));
  EXPECT_TRUE(cursor.IsNew(Step(2, 1)));
  EXPECT_TRUE(cursor.IsNew(Step(3)));
}

TEST(StepCursor, ARestartedAttemptRepeatsStepNumbersAndTheyAreNew) {
  StepCursor cursor(0);
  EXPECT_TRUE(cursor.IsNew(Step(5)));
  EXPECT_TRUE(cursor.IsNew(Step(4, 0, 1)));  // resumed from the checkpoint at step 3
  EXPECT_FALSE(cursor.IsNew(Step(5)));       // the old attempt's step, sent again
  EXPECT_EQ(cursor.ResumeFrom(), 4);
}

TEST(StepCursor, StartsFromTheRequestedStep) {
  EXPECT_EQ(StepCursor(7).ResumeFrom(), 7);
}

TEST(ReconnectBackoff, DoublesUpToTheMaximumAndGivesUpInTime) {
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  ReconnectBackoff backoff(seconds(20));
  const auto t0 = ReconnectBackoff::Clock::now();
  EXPECT_FALSE(backoff.lost());
  EXPECT_EQ(backoff.NextWait(t0), milliseconds(500));
  EXPECT_TRUE(backoff.lost());
  EXPECT_EQ(backoff.NextWait(t0 + seconds(1)), milliseconds(1000));
  EXPECT_EQ(backoff.NextWait(t0 + seconds(2)), milliseconds(2000));
  EXPECT_EQ(backoff.NextWait(t0 + seconds(4)), milliseconds(4000));
  EXPECT_EQ(backoff.NextWait(t0 + seconds(8)), milliseconds(5000));
  EXPECT_EQ(backoff.NextWait(t0 + seconds(18)), milliseconds(2000));  // only 2 s are left
  EXPECT_EQ(backoff.NextWait(t0 + seconds(20)), std::nullopt);
  EXPECT_EQ(backoff.tries(), 6);
  backoff.Reset();
  EXPECT_EQ(backoff.NextWait(t0 + seconds(30)), milliseconds(500));
}

TEST(ReconnectBackoff, ZeroTimeoutNeverRetries) {
  ReconnectBackoff backoff(std::chrono::seconds(0));
  EXPECT_EQ(backoff.NextWait(ReconnectBackoff::Clock::now()), std::nullopt);
}

TEST(IsReconnectable, OnlyAGoneCoordinator) {
  EXPECT_TRUE(IsReconnectable(grpc::Status(grpc::StatusCode::UNAVAILABLE, "")));
  EXPECT_TRUE(IsReconnectable(grpc::Status(grpc::StatusCode::CANCELLED, "")));
  EXPECT_FALSE(IsReconnectable(grpc::Status(grpc::StatusCode::NOT_FOUND, "")));
  EXPECT_FALSE(IsReconnectable(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "")));
}

TEST(JsonLines, EachKindHasItsTypeAndShape) {
  qlorad::v1::Job job;
  job.set_id("job-1");
  job.set_state(qlorad::v1::JOB_STATE_QUEUED);
  job.set_created_unix_ms(1000);
  const auto state = nlohmann::json::parse(StateJsonLine(job, 13500));
  EXPECT_EQ(state, (nlohmann::json{{"type", "state"},
                                   {"job_id", "job-1"},
                                   {"state", "QUEUED"},
                                   {"worker_id", ""},
                                   {"attempt", 0},
                                   {"elapsed_s", 12.5}}));

  const auto done = nlohmann::json::parse(JsonLine("done", job));
  EXPECT_EQ(done["type"], "done");
  EXPECT_EQ(done["id"], "job-1");
  EXPECT_EQ(done["state"], "QUEUED");

  std::ostringstream err;
  EXPECT_EQ(ReportError(err, /*json=*/true, "NOT_FOUND", "NOT_FOUND: no job job-9", 1), 1);
  EXPECT_EQ(nlohmann::json::parse(err.str()),
            (nlohmann::json{{"type", "error"},
                            {"code", "NOT_FOUND"},
                            {"message", "NOT_FOUND: no job job-9"},
                            {"exit_code", 1}}));
  EXPECT_EQ(err.str().back(), '\n');
  std::ostringstream text;
  ReportError(text, /*json=*/false, "NOT_FOUND", "NOT_FOUND: no job job-9", 1);
  EXPECT_EQ(text.str(), "error: NOT_FOUND: no job job-9\n");
}

}  // namespace
}  // namespace qlorad::cli
