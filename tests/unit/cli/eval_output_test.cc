// What qloractl shows of evaluation during training (data.validation): the eval loss on the
// steps that have one (lines, progress bar, --json), and the job's best evaluation.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "client/cli/job_text.h"
#include "client/cli/json_output.h"
#include "client/cli/progress.h"
#include "client/cli/step_printer.h"

namespace qlorad::cli {
namespace {

qlorad::v1::StepMetrics Step(int64_t step, std::optional<double> eval_loss = std::nullopt) {
  qlorad::v1::StepMetrics m;
  m.set_step(step);
  m.set_total_steps(100);
  m.set_loss(2.5);
  if (eval_loss) {
    m.set_eval_loss(*eval_loss);
    m.set_eval_perplexity(std::exp(*eval_loss));
  }
  return m;
}

TEST(EvalOutput, StepLineShowsTheEvalLossOfEvaluatedStepsOnly) {
  EXPECT_EQ(RenderStepLine(Step(40, 2.0), std::nullopt)
                .rfind("step 40/100  loss 2.5000  eval_loss 2.0000  eval_ppl 7.39  lr ", 0),
            0u);
  EXPECT_EQ(RenderStepLine(Step(41), std::nullopt).find("eval"), std::string::npos);
}

TEST(EvalOutput, ProgressBarKeepsTheLastEvalLossInView) {
  std::ostringstream out;
  StepPrinter printer(out, StepFormat::kProgressBar);
  printer.Print(Step(1));
  EXPECT_EQ(out.str().find("eval"), std::string::npos);
  printer.Print(Step(2, 1.75));
  printer.Print(Step(3));
  const std::string last = out.str().substr(out.str().rfind('\r'));
  EXPECT_NE(last.find("3/100  loss 2.5000  eval 1.7500  "), std::string::npos) << last;
}

TEST(EvalOutput, JsonHasNullForAStepThatWasNotEvaluated) {
  const nlohmann::json plain = ToJson(Step(1));
  EXPECT_TRUE(plain.at("eval_loss").is_null());
  EXPECT_TRUE(plain.at("eval_perplexity").is_null());
  const nlohmann::json evaluated = ToJson(Step(2, 0.0));  // set, though zero
  EXPECT_EQ(evaluated.at("eval_loss"), 0.0);
  EXPECT_EQ(evaluated.at("eval_perplexity"), 1.0);
  qlorad::v1::Job job;
  EXPECT_TRUE(ToJson(job).at("best").is_null());
  job.mutable_best()->set_step(4);
  EXPECT_EQ(ToJson(job).at("best").at("step"), 4);
}

TEST(EvalOutput, TheJobNamesItsBestEvaluation) {
  qlorad::v1::Job job;
  job.set_id("job-1");
  job.set_state(qlorad::v1::JOB_STATE_COMPLETED);
  job.set_last_step(60);
  job.set_total_steps(100);
  job.set_adapter_path("/o/adapter");
  EXPECT_EQ(FormatJobDetails(job, 0).find("best"), std::string::npos);
  job.mutable_best()->set_step(40);
  job.mutable_best()->set_eval_loss(1.25);
  job.mutable_best()->set_adapter_path("/o/best/step-40/adapter");
  job.set_stopped_early(true);
  const std::string details = FormatJobDetails(job, 0);
  EXPECT_NE(details.find("adapter   /o/adapter\n"
                         "best      eval loss 1.2500 at step 40: /o/best/step-40/adapter\n"
                         "error     -\n"),
            std::string::npos)
      << details;
  EXPECT_EQ(FormatFinalState(job),
            "job job-1 COMPLETED at step 60/100 (loss 0.0000)\n"
            "adapter written to /o/adapter (stopped early: train.early_stopping)\n"
            "best adapter (eval loss 1.2500 at step 40) in /o/best/step-40/adapter\n");
}

}  // namespace
}  // namespace qlorad::cli
