#include "worker/agent/trainer_event.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/events.h"

namespace qlorad::agent {
namespace {

const EventContext kCtx{"job-7", 2, 1};
constexpr int64_t kNow = 1700000000123;

void ExpectStamped(const v1::TrainerEvent& e) {
  EXPECT_EQ(e.job_id(), "job-7");
  EXPECT_EQ(e.attempt(), 2);
  EXPECT_EQ(e.rank(), 1);
}

TEST(TrainerEventTest, MetricsLineFromTheTrainerFormat) {
  events::Metrics m;
  m.step = 12;
  m.total_steps = 100;
  m.loss = 1.25;
  m.lr = 2e-4;
  m.grad_norm = 0.5;
  m.tokens_per_s = 3000.5;
  m.vram_allocated_bytes = 1 << 20;
  m.vram_reserved_bytes = 2 << 20;
  m.vram_peak_bytes = 3 << 20;
  m.wall_time_s = 4.5;
  m.rank = 1;
  const v1::TrainerEvent e = TrainerEventFromLine(events::MetricsLine(m), kCtx, kNow);
  ExpectStamped(e);
  ASSERT_TRUE(e.has_metrics());
  const v1::StepMetrics& s = e.metrics();
  EXPECT_EQ(s.job_id(), "job-7");
  EXPECT_EQ(s.attempt(), 2);
  EXPECT_EQ(s.rank(), 1);
  EXPECT_EQ(s.step(), 12);
  EXPECT_EQ(s.total_steps(), 100);
  EXPECT_DOUBLE_EQ(s.loss(), 1.25);
  EXPECT_DOUBLE_EQ(s.lr(), 2e-4);
  EXPECT_DOUBLE_EQ(s.grad_norm(), 0.5);
  EXPECT_DOUBLE_EQ(s.tokens_per_s(), 3000.5);
  EXPECT_EQ(s.vram_allocated_bytes(), 1 << 20);
  EXPECT_EQ(s.vram_reserved_bytes(), 2 << 20);
  EXPECT_EQ(s.vram_peak_bytes(), 3 << 20);
  EXPECT_DOUBLE_EQ(s.wall_time_s(), 4.5);
}

TEST(TrainerEventTest, NonFiniteLossesArriveAsTheyWere) {
  events::Metrics m;
  m.step = 3;
  m.loss = std::nan("");
  m.grad_norm = -INFINITY;
  const std::string line = events::MetricsLine(m);
  ASSERT_NE(line.find("\"loss\":\"NaN\""), std::string::npos) << line;
  const v1::TrainerEvent e = TrainerEventFromLine(line, kCtx, kNow);
  ASSERT_TRUE(e.has_metrics());
  EXPECT_TRUE(std::isnan(e.metrics().loss()));
  EXPECT_EQ(e.metrics().grad_norm(), -INFINITY);
  EXPECT_EQ(e.metrics().step(), 3);
  // An older trainer wrote null.
  const v1::TrainerEvent old =
      TrainerEventFromLine(R"({"event":"metrics","step":3,"loss":null})", kCtx, kNow);
  ASSERT_TRUE(old.has_metrics());
  EXPECT_TRUE(std::isnan(old.metrics().loss()));
  // Any other string is still a bad field.
  const v1::TrainerEvent bad =
      TrainerEventFromLine(R"({"event":"metrics","step":3,"loss":"lots"})", kCtx, kNow);
  ASSERT_TRUE(bad.has_log());
  EXPECT_NE(bad.log().message().find("loss"), std::string::npos) << bad.log().message();

  const v1::TrainerEvent done = TrainerEventFromLine(
      events::DoneLine({.steps = 5, .adapter_path = "/a", .final_loss = NAN}), kCtx, kNow);
  ASSERT_TRUE(done.has_done());
  EXPECT_TRUE(std::isnan(done.done().final_loss()));
}

TEST(TrainerEventTest, EvalLossReachesTheMetricsOfEvaluatedStepsOnly) {
  events::Metrics m;
  m.step = 10;
  m.loss = 1.5;
  const v1::TrainerEvent plain = TrainerEventFromLine(events::MetricsLine(m), kCtx, kNow);
  ASSERT_TRUE(plain.has_metrics());
  EXPECT_FALSE(plain.metrics().has_eval_loss());
  EXPECT_FALSE(plain.metrics().has_eval_perplexity());
  m.eval_loss = 1.25;
  const v1::TrainerEvent evaluated = TrainerEventFromLine(events::MetricsLine(m), kCtx, kNow);
  ASSERT_TRUE(evaluated.metrics().has_eval_loss());
  EXPECT_DOUBLE_EQ(evaluated.metrics().eval_loss(), 1.25);
  EXPECT_DOUBLE_EQ(evaluated.metrics().eval_perplexity(), std::exp(1.25));
}

TEST(TrainerEventTest, DoneCarriesTheBestEvaluation) {
  const v1::TrainerEvent plain =
      TrainerEventFromLine(events::DoneLine({.steps = 5, .adapter_path = "/a"}), kCtx, kNow);
  ASSERT_TRUE(plain.has_done());
  EXPECT_FALSE(plain.done().has_best());
  EXPECT_FALSE(plain.done().stopped_early());
  const v1::TrainerEvent best = TrainerEventFromLine(
      events::DoneLine(
          {.steps = 8,
           .adapter_path = "/r/adapter",
           .stopped_early = true,
           .best = events::BestEval{4, 0.5, "/r/best/step-4", "/r/best/step-4/adapter"}}),
      kCtx, kNow);
  ASSERT_TRUE(best.done().has_best());
  EXPECT_TRUE(best.done().stopped_early());
  EXPECT_EQ(best.done().best().step(), 4);
  EXPECT_DOUBLE_EQ(best.done().best().eval_loss(), 0.5);
  EXPECT_EQ(best.done().best().checkpoint_path(), "/r/best/step-4");
  EXPECT_EQ(best.done().best().adapter_path(), "/r/best/step-4/adapter");
}

TEST(TrainerEventTest, LogLineKeepsLevelAndMessage) {
  const v1::TrainerEvent e =
      TrainerEventFromLine(events::LogLine("warning", "loss spiked"), kCtx, kNow);
  ExpectStamped(e);
  ASSERT_TRUE(e.has_log());
  EXPECT_EQ(e.log().level(), "warning");
  EXPECT_EQ(e.log().message(), "loss spiked");
  EXPECT_EQ(e.log().source(), "trainer");
  EXPECT_EQ(e.log().job_id(), "job-7");
  EXPECT_EQ(e.log().rank(), 1);
  EXPECT_EQ(e.log().unix_ms(), kNow);
}

// A step retried in smaller pieces after running out of memory reaches the job's log.
TEST(TrainerEventTest, AReducedMicroBatchIsAWarningInTheJobsLog) {
  const v1::TrainerEvent e = TrainerEventFromLine(
      events::MicroBatchReducedLine({.step = 3,
                                     .from_rows = 4,
                                     .to_rows = 2,
                                     .grad_accum = 2,
                                     .seq_len = 512,
                                     .message = "step 3 ran out of memory; retrying"}),
      kCtx, kNow);
  ExpectStamped(e);
  ASSERT_TRUE(e.has_log());
  EXPECT_EQ(e.log().level(), "warning");
  EXPECT_EQ(e.log().message(), "step 3 ran out of memory; retrying");
  EXPECT_EQ(e.log().source(), "trainer");
}

TEST(TrainerEventTest, CheckpointDoneErrorStarted) {
  const v1::TrainerEvent ckpt =
      TrainerEventFromLine(events::CheckpointLine(50, "/runs/x/step-50"), kCtx, kNow);
  ExpectStamped(ckpt);
  ASSERT_TRUE(ckpt.has_checkpoint());
  EXPECT_EQ(ckpt.checkpoint().step(), 50);
  EXPECT_EQ(ckpt.checkpoint().path(), "/runs/x/step-50");

  const v1::TrainerEvent done = TrainerEventFromLine(
      events::DoneLine({.steps = 100, .adapter_path = "/runs/x/adapter", .final_loss = 0.75}), kCtx,
      kNow);
  ASSERT_TRUE(done.has_done());
  EXPECT_EQ(done.done().steps(), 100);
  EXPECT_EQ(done.done().adapter_path(), "/runs/x/adapter");
  EXPECT_DOUBLE_EQ(done.done().final_loss(), 0.75);

  const v1::TrainerEvent error =
      TrainerEventFromLine(events::ErrorLine("no such file", "data.path"), kCtx, kNow);
  ASSERT_TRUE(error.has_error());
  EXPECT_EQ(error.error().message(), "no such file");
  EXPECT_EQ(error.error().field(), "data.path");

  const v1::TrainerEvent started =
      TrainerEventFromLine(events::StartedLine(4242, 100, "cpu", 1, 2), kCtx, kNow);
  ExpectStamped(started);
  ASSERT_TRUE(started.has_started());
  EXPECT_EQ(started.started().pid(), 4242);
}

TEST(TrainerEventTest, UnknownKeysAreIgnored) {
  const v1::TrainerEvent e = TrainerEventFromLine(
      R"({"event":"checkpoint","step":7,"path":"/c","sha256":"ab12","extra":{"nested":[1,2]}})",
      kCtx, kNow);
  ASSERT_TRUE(e.has_checkpoint());
  EXPECT_EQ(e.checkpoint().step(), 7);
  EXPECT_EQ(e.checkpoint().path(), "/c");
}

TEST(TrainerEventTest, NonJsonLineBecomesAnInfoLogLine) {
  const v1::TrainerEvent e = TrainerEventFromLine("Loading checkpoint shards: 50%", kCtx, kNow);
  ExpectStamped(e);
  ASSERT_TRUE(e.has_log());
  EXPECT_EQ(e.log().message(), "Loading checkpoint shards: 50%");
  EXPECT_EQ(e.log().level(), "info");
  EXPECT_EQ(e.log().source(), "trainer");
}

TEST(TrainerEventTest, JsonThatIsNotAnEventBecomesALogLine) {
  for (const char* line : {R"([1,2,3])", R"({"step":3})", R"({"event":"future_kind","x":1})",
                           R"({"event":5})", R"("just a string")"}) {
    const v1::TrainerEvent e = TrainerEventFromLine(line, kCtx, kNow);
    ASSERT_TRUE(e.has_log()) << line;
    EXPECT_EQ(e.log().message(), line);
  }
}

TEST(TrainerEventTest, WrongFieldTypeBecomesAWarningNamingTheField) {
  const std::string line = R"({"event":"metrics","step":"twelve","loss":1.0})";
  const v1::TrainerEvent e = TrainerEventFromLine(line, kCtx, kNow);
  ASSERT_TRUE(e.has_log());
  EXPECT_EQ(e.log().level(), "warning");
  EXPECT_NE(e.log().message().find("step: expected an integer"), std::string::npos)
      << e.log().message();
  EXPECT_NE(e.log().message().find(line), std::string::npos);
}

}  // namespace
}  // namespace qlorad::agent
