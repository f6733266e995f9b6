// The progress line at the widths terminals come in: it must never reach the last column (a
// wrapped line cannot be redrawn in place, and each redraw then prints a new line).
#include <gtest/gtest.h>

#include "client/cli/progress.h"

namespace qlorad::cli {
namespace {

qlorad::v1::StepMetrics Step() {
  qlorad::v1::StepMetrics m;
  m.set_step(400);
  m.set_total_steps(1000);
  m.set_loss(2.34119);
  m.set_tokens_per_s(12345);
  return m;
}

TEST(FitProgressLine, WideTerminalGetsTheFullBarAndEveryField) {
  EXPECT_EQ(FitProgressLine(Step(), 35.0, 120, 2.5),
            "[############..................] 400/1000  loss 2.3412  eval 2.5000  12.3k tok/s  "
            "ETA 0:35");
}

TEST(FitProgressLine, SeventyColumnsShrinksTheBarFirst) {
  const std::string line = FitProgressLine(Step(), 35.0, 70);
  EXPECT_EQ(line, "[########..............] 400/1000  loss 2.3412  12.3k tok/s  ETA 0:35");
  EXPECT_EQ(line.size(), 69u);
}

TEST(FitProgressLine, NarrowerDropsRateThenEvalThenEta) {
  EXPECT_EQ(FitProgressLine(Step(), 35.0, 60, 2.5),
            "[####........] 400/1000  loss 2.3412  eval 2.5000  ETA 0:35");
  EXPECT_EQ(FitProgressLine(Step(), 35.0, 50, 2.5),
            "[######.........] 400/1000  loss 2.3412  ETA 0:35");
  EXPECT_EQ(FitProgressLine(Step(), 35.0, 40, 2.5), "[######.........] 400/1000  loss 2.3412");
}

TEST(FitProgressLine, NeverReachesTheLastColumn) {
  for (int columns = 1; columns <= 200; ++columns) {
    for (const auto eval : {std::optional<double>(), std::optional<double>(2.5)}) {
      const std::string line = FitProgressLine(Step(), 35.0, columns, eval);
      EXPECT_LE(static_cast<int>(line.size()), std::max(columns - 1, 0)) << columns;
      EXPECT_EQ(line.find('\n'), std::string::npos);
    }
  }
}

TEST(FitProgressLine, TinyTerminalKeepsStepAndLossAsFarAsTheyFit) {
  EXPECT_EQ(FitProgressLine(Step(), 35.0, 20), "400/1000  loss 2.34");
  EXPECT_EQ(FitProgressLine(Step(), 35.0, 0), "");
}

TEST(RenderQueuedLine, ElapsedTimeAndCutToTheWidth) {
  qlorad::v1::Job job;
  job.set_id("job-7");
  EXPECT_EQ(RenderQueuedLine(job, 72, 80), "job-7 queued, waiting for a worker (1:12)");
  EXPECT_EQ(RenderQueuedLine(job, 72, 20), "job-7 queued, waiti");
}

TEST(RenderQueuedLine, APlaceInLineShowsThePositionAndTheLineLength) {
  qlorad::v1::Job job;
  job.set_id("job-7");
  job.set_queue_position(2);
  job.set_queue_length(3);
  EXPECT_EQ(RenderQueuedLine(job, 5, 80), "job-7 queued, position 2 of 3 (0:05)");
}

}  // namespace
}  // namespace qlorad::cli
