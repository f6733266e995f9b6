// The evaluation settings of the job spec: data.validation, train.eval_steps, eval_batches and
// early_stopping, each checked up front with an error naming the field.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/jobspec.h"

namespace qlorad {
namespace {

const char* kBase = R"(
name: demo
model: {path: /models/tiny}
)";

StatusOr<JobSpec> Parse(const std::string& data, const std::string& train = "") {
  return ParseJobSpec(std::string(kBase) + "data: " + data + "\n" +
                      (train.empty() ? "" : "train: " + train + "\n"));
}

std::string ErrorOf(const std::string& data, const std::string& train = "") {
  auto spec = Parse(data, train);
  EXPECT_FALSE(spec.ok()) << data << " / " << train;
  return spec.ok() ? "" : spec.status().message();
}

TEST(JobSpecEval, NoValidationMeansNoEvaluation) {
  auto spec = Parse("{path: t.jsonl}");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_FALSE(spec->data.HasValidation());
  EXPECT_EQ(spec->train.eval_steps, 50);
  EXPECT_FALSE(spec->train.eval_batches.has_value());
  EXPECT_FALSE(spec->train.early_stopping.has_value());
}

TEST(JobSpecEval, ValidationIsAFileOrAFraction) {
  auto file = Parse("{path: t.jsonl, validation: data/val.jsonl}");
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->data.validation_path, "data/val.jsonl");
  EXPECT_EQ(file->data.validation_fraction, 0);
  EXPECT_TRUE(file->data.HasValidation());

  auto fraction = Parse("{path: t.jsonl, validation: 0.1}", "{eval_steps: 5, eval_batches: 2}");
  ASSERT_TRUE(fraction.ok()) << fraction.status().ToString();
  EXPECT_TRUE(fraction->data.validation_path.empty());
  EXPECT_DOUBLE_EQ(fraction->data.validation_fraction, 0.1);
  EXPECT_EQ(fraction->train.eval_steps, 5);
  EXPECT_EQ(fraction->train.eval_batches, 2);

  // A file whose name reads as a number is written as a path.
  auto numeric_name = Parse("{path: t.jsonl, validation: ./0.5}");
  ASSERT_TRUE(numeric_name.ok());
  EXPECT_EQ(numeric_name->data.validation_path, "./0.5");

  auto null = Parse("{path: t.jsonl, validation: null}");
  ASSERT_TRUE(null.ok());
  EXPECT_FALSE(null->data.HasValidation());
}

TEST(JobSpecEval, BadValidationNamesTheField) {
  EXPECT_EQ(ErrorOf("{path: t.jsonl, validation: 1.5}"),
            "data.validation: a fraction of data.path must be in (0, 1), got 1.5");
  EXPECT_EQ(ErrorOf("{path: t.jsonl, validation: 0}"),
            "data.validation: a fraction of data.path must be in (0, 1), got 0");
  EXPECT_EQ(ErrorOf("{path: t.jsonl, validation: ''}"),
            "data.validation: must be a file path or a fraction");
  EXPECT_EQ(ErrorOf("{path: t.jsonl, validation: [a, b]}").rfind("data.validation: expected", 0),
            0u);
}

TEST(JobSpecEval, EvalStepsAndBatchesArePositive) {
  const std::string data = "{path: t.jsonl, validation: 0.2}";
  EXPECT_EQ(ErrorOf(data, "{eval_steps: 0}"), "train.eval_steps: must be > 0, got 0");
  EXPECT_EQ(ErrorOf(data, "{eval_batches: -1}"),
            "train.eval_batches: must be > 0 or null (the whole validation set), got -1");
  EXPECT_EQ(ErrorOf(data, "{eval_steps: often}"),
            "train.eval_steps: expected an integer, got 'often'");
  auto all = Parse(data, "{eval_batches: null}");
  ASSERT_TRUE(all.ok());
  EXPECT_FALSE(all->train.eval_batches.has_value());
}

TEST(JobSpecEval, EarlyStoppingHasDefaultsAndChecksThem) {
  const std::string data = "{path: t.jsonl, validation: 0.2}";
  auto defaults = Parse(data, "{early_stopping: {}}");
  ASSERT_TRUE(defaults.ok()) << defaults.status().ToString();
  ASSERT_TRUE(defaults->train.early_stopping.has_value());
  EXPECT_EQ(defaults->train.early_stopping->patience, 3);
  EXPECT_EQ(defaults->train.early_stopping->min_delta, 0);

  auto set = Parse(data, "{early_stopping: {patience: 2, min_delta: 0.01}}");
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->train.early_stopping->patience, 2);
  EXPECT_DOUBLE_EQ(set->train.early_stopping->min_delta, 0.01);

  auto off = Parse(data, "{early_stopping: null}");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->train.early_stopping.has_value());

  EXPECT_EQ(ErrorOf(data, "{early_stopping: {patience: 0}}"),
            "train.early_stopping.patience: must be >= 1 evaluations, got 0");
  EXPECT_EQ(ErrorOf(data, "{early_stopping: {min_delta: -0.1}}"),
            "train.early_stopping.min_delta: must be >= 0, got -0.1");
  EXPECT_EQ(ErrorOf(data, "{early_stopping: {patience: 2, delta: 1}}"),
            "train.early_stopping.delta: unknown key");
  EXPECT_EQ(ErrorOf(data, "{early_stopping: 3}"), "train.early_stopping: must be a mapping");
}

TEST(JobSpecEval, EvaluationSettingsNeedValidationData) {
  for (const char* train : {"{eval_steps: 10}", "{eval_batches: 2}", "{early_stopping: {}}"}) {
    const std::string error = ErrorOf("{path: t.jsonl}", train);
    EXPECT_NE(error.find(": needs data.validation"), std::string::npos) << error;
    EXPECT_EQ(error.rfind("train.", 0), 0u) << error;
  }
  // Null is the default (off), so it needs nothing.
  EXPECT_TRUE(Parse("{path: t.jsonl}", "{early_stopping: null, eval_batches: null}").ok());
}

TEST(JobSpecEval, CheckFilesNamesAMissingValidationFile) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("jobspec_eval_" + std::to_string(::getpid()));
  fs::create_directories(dir / "model");
  std::ofstream(dir / "model" / "config.json") << "{}";
  std::ofstream(dir / "t.jsonl") << "{}\n";
  auto spec = ParseJobSpec("name: x\nmodel: {path: " + (dir / "model").string() +
                           "}\ndata: {path: " + (dir / "t.jsonl").string() +
                           ", validation: " + (dir / "v.jsonl").string() + "}\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(CheckJobSpecFiles(*spec).message().rfind("data.validation: no such file", 0), 0u);
  std::ofstream(dir / "v.jsonl") << "{}\n";
  EXPECT_TRUE(CheckJobSpecFiles(*spec).ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace qlorad
