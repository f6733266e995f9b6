#include "worker/trainer/train/lr_schedule.h"

#include <gtest/gtest.h>

namespace qlorad::trainer {
namespace {

TrainSpec Spec(Scheduler scheduler) {
  TrainSpec s;
  s.lr = 1.0;
  s.max_steps = 12;
  s.warmup_steps = 2;
  s.scheduler = scheduler;
  return s;
}

TEST(LrScheduleTest, WarmupIsLinearFromZero) {
  for (const Scheduler name : {Scheduler::kCosine, Scheduler::kLinear, Scheduler::kConstant}) {
    EXPECT_DOUBLE_EQ(LearningRateAt(Spec(name), 0), 0.0);
    EXPECT_DOUBLE_EQ(LearningRateAt(Spec(name), 1), 0.5);
    EXPECT_DOUBLE_EQ(LearningRateAt(Spec(name), 2), 1.0);
  }
}

TEST(LrScheduleTest, DecayShapes) {
  // 10 decay steps after warmup: progress = (step - 2) / 10.
  EXPECT_DOUBLE_EQ(LearningRateAt(Spec(Scheduler::kCosine), 7), 0.5);
  EXPECT_NEAR(LearningRateAt(Spec(Scheduler::kCosine), 4), 0.5 * (1 + std::cos(M_PI * 0.2)), 1e-15);
  EXPECT_DOUBLE_EQ(LearningRateAt(Spec(Scheduler::kLinear), 7), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateAt(Spec(Scheduler::kLinear), 12), 0.0);
  EXPECT_DOUBLE_EQ(LearningRateAt(Spec(Scheduler::kConstant), 11), 1.0);
}

}  // namespace
}  // namespace qlorad::trainer
