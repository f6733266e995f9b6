// Submitted specs: a bad one is INVALID_ARGUMENT naming the field; a good one becomes a QUEUED
// job whose fields come from the spec.
#include "server/job_validation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;

Status Reject(const std::string& yaml) {
  auto record = NewJobFromSpec(yaml, 1, kDefaultMaxSpecBytes);
  EXPECT_FALSE(record.ok()) << "accepted:\n" << yaml;
  return record.ok() ? Status::Ok() : record.status();
}

TEST(JobValidationTest, MalformedYamlSaysWhere) {
  Status s = Reject("name: x\nmodel: {path: /m\n");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("malformed YAML"));
  EXPECT_THAT(s.message(), HasSubstr("line"));
}

TEST(JobValidationTest, UnknownKeyIsNamedWithItsSection) {
  std::string yaml = SpecYaml();
  yaml.replace(yaml.find("lr:"), 3, "lrr:");
  Status s = Reject(yaml);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("train.lrr"));
}

TEST(JobValidationTest, NegativeLearningRateNamesTrainLr) {
  std::string yaml = SpecYaml();
  yaml.replace(yaml.find("lr: 1.0e-4"), 10, "lr: -0.1");
  Status s = Reject(yaml);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("train.lr"));
}

TEST(JobValidationTest, EmptySpecNamesTheRequestField) {
  Status s = Reject("");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("spec_yaml"));
}

TEST(JobValidationTest, SpecOverTheCapNamesItsSizeAndTheCap) {
  // A valid spec padded past the cap: refused for its size alone, before YAML parsing.
  std::string yaml = SpecYaml() + "# " + std::string(2000, 'x') + "\n";
  auto refused = NewJobFromSpec(yaml, 1, 1024);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("spec_yaml: the spec is " + std::to_string(yaml.size()) +
                        " bytes, over the coordinator's limit of 1024 bytes"));
  EXPECT_THAT(refused.status().message(), HasSubstr("--max-spec-bytes"));
  // Exactly at the cap is allowed.
  EXPECT_TRUE(NewJobFromSpec(yaml, 1, yaml.size()).ok());
  EXPECT_GE(kDefaultMaxSpecBytes, size_t{1} << 20) << "the default must fit real specs";
}

TEST(JobValidationTest, GoodSpecBecomesAQueuedJob) {
  const std::string yaml =
      SpecYaml({.name = "llama", .priority = 80, .max_restarts = 5, .gpus = 4, .max_steps = 250});
  auto record = NewJobFromSpec(yaml, 123456, kDefaultMaxSpecBytes);
  ASSERT_TRUE(record.ok()) << record.status().ToString();
  const v1::Job& job = record->job;
  EXPECT_THAT(job.id(), ::testing::MatchesRegex("job-[0-9a-f]{8}"));
  EXPECT_EQ(job.name(), "llama");
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.priority(), 80);
  EXPECT_EQ(job.max_restarts(), 5);
  EXPECT_EQ(job.gpus(), 4);
  EXPECT_EQ(job.total_steps(), 250);
  EXPECT_EQ(job.created_unix_ms(), 123456);
  EXPECT_EQ(job.attempt(), 0);
  EXPECT_EQ(job.spec_yaml(), yaml);
  EXPECT_EQ(record->last_checkpoint, "");
  EXPECT_NE(NewJobFromSpec(yaml, 1, kDefaultMaxSpecBytes)->job.id(), job.id()) << "ids are fresh";
}

TEST(JobValidationTest, PathsMustSuitOneRegisteredWorkerWhenAnyReportedRoots) {
  JobSpec spec;
  spec.model.path = "/models/tiny";
  spec.data.path = "data/train.jsonl";
  spec.checkpoint.output_dir = "runs/x";
  const WorkerRoots models{"gpu0", {"/work", {"/models"}, "/work"}};
  const WorkerRoots bare{"gpu1", {"/w1", {"/w1"}, "/w1"}};
  EXPECT_TRUE(CheckPathsOnWorkers(spec, {}).ok()) << "no roots known: the worker decides";
  EXPECT_TRUE(CheckPathsOnWorkers(spec, {models}).ok());
  EXPECT_TRUE(CheckPathsOnWorkers(spec, {bare, models}).ok()) << "one worker that may run it";

  const Status refused = CheckPathsOnWorkers(spec, {bare});
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.message(),
            "model.path: /models/tiny is outside the folders this worker may read: /w1 "
            "(worker gpu1)");

  spec.checkpoint.output_dir = "../../etc";
  const Status neither = CheckPathsOnWorkers(spec, {models, bare});
  EXPECT_THAT(
      neither.message(),
      HasSubstr("checkpoint.output_dir: ../../etc (/etc) is outside the folders this worker "
                "may write: /work (worker gpu0; 1 other worker(s) refuse it too)"));
}

}  // namespace
}  // namespace qlorad::server::testing
