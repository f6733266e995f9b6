#include "worker/trainer/train/eval_tracker.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace qlorad::trainer {
namespace {

TEST(EvalTrackerTest, KeepsTheLowestLossAndNeverStopsWithoutEarlyStopping) {
  EvalTracker tracker(std::nullopt);
  EXPECT_TRUE(tracker.Record(10, 2.0).new_best);
  EXPECT_FALSE(tracker.Record(20, 2.5).new_best);
  EXPECT_TRUE(tracker.Record(30, 1.5).new_best);
  for (int64_t step = 40; step < 200; step += 10) EXPECT_FALSE(tracker.Record(step, 3.0).stop);
  EXPECT_EQ(tracker.progress().best_step, 30);
  EXPECT_EQ(tracker.progress().best_loss, 1.5);
}

TEST(EvalTrackerTest, StopsAfterPatienceEvaluationsWithoutImprovement) {
  EvalTracker tracker(EarlyStoppingSpec{.patience = 2, .min_delta = 0.0});
  EXPECT_FALSE(tracker.Record(1, 3.0).stop);
  EXPECT_FALSE(tracker.Record(2, 2.0).stop);
  EXPECT_FALSE(tracker.Record(3, 2.5).stop);  // one without improvement
  EXPECT_FALSE(tracker.Record(4, 1.9).stop);  // improvement: the count starts again
  EXPECT_FALSE(tracker.Record(5, 1.9).stop);  // equal is no improvement
  const EvalTracker::Verdict last = tracker.Record(6, 2.2);
  EXPECT_TRUE(last.stop);
  EXPECT_FALSE(last.new_best);
  EXPECT_EQ(tracker.progress().best_step, 4);
}

TEST(EvalTrackerTest, MinDeltaGainsAreKeptButUsePatience) {
  EvalTracker tracker(EarlyStoppingSpec{.patience = 2, .min_delta = 0.1});
  tracker.Record(1, 2.0);
  const EvalTracker::Verdict small = tracker.Record(2, 1.95);  // lower, but by less than 0.1
  EXPECT_TRUE(small.new_best);
  EXPECT_FALSE(small.stop);
  EXPECT_EQ(tracker.progress().evals_without_improvement, 1);
  const EvalTracker::Verdict again = tracker.Record(3, 1.9);  // 0.05 below the new best
  EXPECT_TRUE(again.new_best);
  EXPECT_TRUE(again.stop);
  EXPECT_EQ(tracker.progress().best_step, 3);
}

TEST(EvalTrackerTest, NonFiniteLossIsNeitherBestNorImprovement) {
  EvalTracker tracker(EarlyStoppingSpec{.patience = 1, .min_delta = 0.0});
  const EvalTracker::Verdict nan = tracker.Record(1, std::nan(""));
  EXPECT_FALSE(nan.new_best);
  EXPECT_TRUE(nan.stop);
  EXPECT_EQ(tracker.progress().best_step, 0);
}

TEST(EvalTrackerTest, ResumesFromSavedProgress) {
  EvalProgress saved{.best_step = 20,
                     .best_loss = 1.0,
                     .best_checkpoint = "/o/best/step-20",
                     .evals_without_improvement = 1};
  EvalTracker tracker(EarlyStoppingSpec{.patience = 2, .min_delta = 0.0}, saved);
  const EvalTracker::Verdict v = tracker.Record(30, 1.2);  // the second without improvement
  EXPECT_FALSE(v.new_best);
  EXPECT_TRUE(v.stop);
  EXPECT_EQ(tracker.progress().best_checkpoint, "/o/best/step-20");
}

}  // namespace
}  // namespace qlorad::trainer
