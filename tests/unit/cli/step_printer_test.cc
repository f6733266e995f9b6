#include "client/cli/step_printer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

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
}

}  // namespace
}  // namespace qlorad::cli
