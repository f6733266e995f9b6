#include "client/cli/step_printer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace qlorad::cli {
namespace {

qlorad::v1::StepMetrics Step(int64_t step, double wall_s, int32_t rank = 0) {
  qlorad::v1::StepMetrics m;
  m.set_job_id("job-1");
  m.set_step(step);
  m.set_total_steps(10);
  m.set_loss(2.0 / static_cast<double>(step));
  m.set_lr(1e-4);
  m.set_tokens_per_s(2000);
  m.set_wall_time_s(wall_s);
  m.set_rank(rank);
  return m;
}

TEST(StepPrinter, PlainLinesForRankZeroOnly) {
  std::ostringstream out;
  StepPrinter printer(out, StepFormat::kLines);
  printer.Print(Step(1, 1.0));
  printer.Print(Step(1, 1.0, /*rank=*/1));
  printer.Print(Step(2, 3.0));
  printer.Finish();
  EXPECT_EQ(out.str(),
            "step 1/10  loss 2.0000  lr 1.00e-04  grad_norm 0.0000  2.0k tok/s  ETA --:--\n"
            "step 2/10  loss 1.0000  lr 1.00e-04  grad_norm 0.0000  2.0k tok/s  ETA 0:16\n");
}

TEST(StepPrinter, ProgressBarRedrawsInPlaceAndEndsTheLine) {
  std::ostringstream out;
  StepPrinter printer(out, StepFormat::kProgressBar);
  printer.Print(Step(1, 1.0));
  printer.Print(Step(5, 9.0));
  printer.Finish();
  const std::string bar1 = "[###...........................]";
  const std::string bar5 = "[###############...............]";
  EXPECT_EQ(out.str(), "\r" + bar1 + " 1/10  loss 2.0000  2.0k tok/s  ETA --:--\x1b[K" + "\r" +
                           bar5 + " 5/10  loss 0.4000  2.0k tok/s  ETA 0:10\x1b[K" + "\n");
}

TEST(StepPrinter, FinishWithoutStepsPrintsNothing) {
  std::ostringstream out;
  StepPrinter printer(out, StepFormat::kProgressBar);
  printer.Finish();
  EXPECT_EQ(out.str(), "");
}

TEST(StepPrinter, JsonHasEveryRank) {
  std::ostringstream out;
  StepPrinter printer(out, StepFormat::kJson);
  printer.Print(Step(1, 1.0));
  printer.Print(Step(1, 1.0, /*rank=*/1));
  printer.Finish();
  std::istringstream lines(out.str());
  std::string line;
  std::vector<nlohmann::json> objects;
  while (std::getline(lines, line)) objects.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(objects.size(), 2u);
  EXPECT_EQ(objects[0]["rank"], 0);
  EXPECT_EQ(objects[1]["rank"], 1);
  EXPECT_EQ(objects[1]["step"], 1);
  EXPECT_EQ(objects[1]["job_id"], "job-1");
  EXPECT_EQ(objects[0]["type"], "metrics");
  EXPECT_EQ(objects[1]["type"], "metrics");
}

TEST(StepPrinter, PlainLinesAtMostTwiceASecondOfTrainingButNeverLoseTheEnd) {
  std::ostringstream out;
  StepPrinter printer(out, StepFormat::kLines);
  // 0.1 s apart on the trainer's clock: steps 1 (first) and 6 (0.5 s later) print; step 3 was
  // evaluated and always prints; 10 is the last step.
  for (int64_t step = 1; step <= 9; ++step) {
    qlorad::v1::StepMetrics m = Step(step, 0.1 * static_cast<double>(step));
    if (step == 3) m.set_eval_loss(1.5);
    printer.Print(m);
  }
  printer.Finish();  // step 9 was held back: Finish prints it
  std::istringstream lines(out.str());
  std::vector<std::string> printed;
  for (std::string line; std::getline(lines, line);) printed.push_back(line.substr(0, 9));
  EXPECT_EQ(printed,
            (std::vector<std::string>{"step 1/10", "step 3/10", "step 8/10", "step 9/10"}));
}

TEST(StepPrinter, ANewAttemptPrintsAtOnce) {
  std::ostringstream out;
  StepPrinter printer(out, StepFormat::kLines);
  printer.Print(Step(5, 1.0));
  qlorad::v1::StepMetrics restarted = Step(4, 1.05);
  restarted.set_attempt(1);
  printer.Print(restarted);
  const std::string text = out.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
}

// What a printer writes for the queued line and then step 5, Finish() included.
std::string QueuedThenStep5(StepFormat format, int columns) {
  std::ostringstream out;
  StepPrinter printer(out, format, columns);
  printer.Redraw("job-1 queued, waiting for a worker (0:03)");
  printer.Print(Step(5, 9.0));
  printer.Finish();
  return out.str();
}

TEST(StepPrinter, ProgressBarFitsTheTerminal) {
  EXPECT_EQ(QueuedThenStep5(StepFormat::kProgressBar, 40),
            "\rjob-1 queued, waiting for a worker (0:03)\x1b[K"
            "\r[#########..........] 5/10  loss 0.4000\x1b[K\n");
}

TEST(StepPrinter, RedrawIsForTerminalsOnly) {
  EXPECT_EQ(QueuedThenStep5(StepFormat::kLines, 40).substr(0, 9), "step 5/10");
}

}  // namespace
}  // namespace qlorad::cli
