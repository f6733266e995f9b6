#include "client/cli/progress.h"

#include <gtest/gtest.h>

namespace qlorad::cli {
namespace {

qlorad::v1::StepMetrics Step(int64_t step, double wall_s, int32_t attempt = 0) {
  qlorad::v1::StepMetrics m;
  m.set_step(step);
  m.set_total_steps(100);
  m.set_wall_time_s(wall_s);
  m.set_attempt(attempt);
  return m;
}

TEST(RenderProgressBar, FillsInProportion) {
  EXPECT_EQ(RenderProgressBar(0, 100, 10), "[..........]");
  EXPECT_EQ(RenderProgressBar(40, 100, 10), "[####......]");
  EXPECT_EQ(RenderProgressBar(99, 100, 10), "[#########.]");
  EXPECT_EQ(RenderProgressBar(100, 100, 10), "[##########]");
  EXPECT_EQ(RenderProgressBar(1, 3, 5), "[#....]");
}

TEST(RenderProgressBar, OutOfRangeIsClamped) {
  EXPECT_EQ(RenderProgressBar(150, 100, 10), "[##########]");
  EXPECT_EQ(RenderProgressBar(-5, 100, 4), "[....]");
}

TEST(RenderProgressBar, UnknownTotalIsEmpty) {
  EXPECT_EQ(RenderProgressBar(5, 0, 4), "[....]");
}

TEST(EtaEstimator, NeedsTwoSteps) {
  EtaEstimator eta;
  EXPECT_FALSE(eta.SecondsLeft().has_value());
  eta.Observe(Step(1, 10.0));
  EXPECT_FALSE(eta.SecondsLeft().has_value());
}

TEST(EtaEstimator, AverageTimePerStepTimesStepsLeft) {
  EtaEstimator eta;
  eta.Observe(Step(1, 10.0));
  eta.Observe(Step(2, 10.5));
  eta.Observe(Step(40, 29.5));  // 39 steps in 19.5 s: 0.5 s per step
  ASSERT_TRUE(eta.SecondsLeft().has_value());
  EXPECT_DOUBLE_EQ(*eta.SecondsLeft(), 30.0);
}

TEST(EtaEstimator, ARestartStartsANewEstimate) {
  EtaEstimator eta;
  eta.Observe(Step(1, 10.0));
  eta.Observe(Step(20, 19.5));
  // Attempt 1 resumes from a checkpoint at step 10; its clock starts again near 0.
  eta.Observe(Step(11, 2.0, 1));
  EXPECT_FALSE(eta.SecondsLeft().has_value());
  eta.Observe(Step(12, 4.0, 1));
  ASSERT_TRUE(eta.SecondsLeft().has_value());
  EXPECT_DOUBLE_EQ(*eta.SecondsLeft(), 88 * 2.0);
}

TEST(EtaEstimator, DoneMeansZero) {
  EtaEstimator eta;
  eta.Observe(Step(99, 1.0));
  eta.Observe(Step(100, 2.0));
  EXPECT_DOUBLE_EQ(*eta.SecondsLeft(), 0.0);
}

TEST(RenderProgressLine, MatchesTheDocumentedLayout) {
  qlorad::v1::StepMetrics m = Step(40, 0);
  m.set_loss(2.34119);
  m.set_tokens_per_s(1234);
  EXPECT_EQ(RenderProgressLine(m, 35.0, 10),
            "[####......] 40/100  loss 2.3412  1.2k tok/s  ETA 0:35");
  EXPECT_EQ(RenderProgressLine(m, std::nullopt, 10),
            "[####......] 40/100  loss 2.3412  1.2k tok/s  ETA --:--");
}

TEST(RenderStepLine, EveryFieldAndVramWhenReported) {
  qlorad::v1::StepMetrics m = Step(7, 0);
  m.set_loss(1.5);
  m.set_lr(2e-4);
  m.set_grad_norm(0.81234);
  m.set_tokens_per_s(950);
  EXPECT_EQ(RenderStepLine(m, 12.0),
            "step 7/100  loss 1.5000  lr 2.00e-04  grad_norm 0.8123  950 tok/s  ETA 0:12");
  m.set_vram_peak_bytes(int64_t{3} << 29);
  m.set_total_steps(0);
  EXPECT_EQ(RenderStepLine(m, std::nullopt),
            "step 7/?  loss 1.5000  lr 2.00e-04  grad_norm 0.8123  950 tok/s  vram 1.5 GiB  "
            "ETA --:--");
}

}  // namespace
}  // namespace qlorad::cli
