#include "worker/agent/trainer_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/agent/script_fixture.h"

namespace qlorad::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TempDir;

v1::Assignment Start(const std::string& job_id, int attempt) {
  v1::Assignment a;
  a.set_kind(v1::Assignment::KIND_START);
  a.set_job_id(job_id);
  a.set_attempt(attempt);
  a.set_spec_yaml("name: demo\nmodel: {path: /m}\n");
  a.set_world_size(1);
  return a;
}

TEST(TrainerCommandTest, SpecIsWrittenUnderJobsAndAttempt) {
  TempDir dir;
  const TrainerSetup setup{"/opt/qlorad/bin/qlorad-train", dir.path(), std::nullopt, {}};
  auto path = WriteJobSpec(setup, Start("job-42", 3));
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_EQ(*path, dir.path() / "jobs" / "job-42" / "attempt-3" / "job.yaml");
  std::ifstream in(*path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "name: demo\nmodel: {path: /m}\n");
}

// Ranks on a shared file system write the same spec file: another rank's rewrite replaces it
// whole, so a trainer that opened it reads one complete spec, and no temporary file stays behind.
TEST(TrainerCommandTest, ARewriteByAnotherRankReplacesTheSpecWhole) {
  TempDir dir;
  const TrainerSetup setup{"/opt/qlorad/bin/qlorad-train", dir.path(), std::nullopt, {}};
  v1::Assignment rank0 = Start("job-7", 0);
  auto path = WriteJobSpec(setup, rank0);
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  std::ifstream reading(*path);  // a trainer that opened the spec

  v1::Assignment rank1 = Start("job-7", 0);
  rank1.set_rank(1);
  rank1.set_spec_yaml("name: other\n");
  ASSERT_TRUE(WriteJobSpec(setup, rank1).ok());
  std::stringstream seen;
  seen << reading.rdbuf();
  EXPECT_EQ(seen.str(), "name: demo\nmodel: {path: /m}\n");
  std::ifstream now(*path);
  std::stringstream current;
  current << now.rdbuf();
  EXPECT_EQ(current.str(), "name: other\n");
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(path->parent_path())) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(names, ElementsAre("job.yaml"));
}

TEST(TrainerCommandTest, JobIdsThatWouldEscapeTheWorkDirAreRefused) {
  for (const char* bad : {"", "..", ".", "a/b", "../../etc"}) {
    auto path = JobSpecPath("/w", bad, 0);
    ASSERT_FALSE(path.ok()) << bad;
    EXPECT_THAT(path.status().message(), HasSubstr("job_id"));
  }
  EXPECT_THAT(JobSpecPath("/w", "j", -1).status().message(), HasSubstr("attempt"));
}

TEST(TrainerCommandTest, CpuCommandLine) {
  const TrainerSetup setup{"/bin/qlorad-train", "/work", std::nullopt, {}};
  const process::SpawnSpec spec =
      TrainerSpawnSpec(setup, Start("j", 0), "/work/jobs/j/attempt-0/job.yaml");
  EXPECT_THAT(spec.argv,
              ElementsAre("/bin/qlorad-train", "run", "/work/jobs/j/attempt-0/job.yaml", "--json",
                          "--device", "cpu", "--attempt", "0", "--rank", "0", "--world-size", "1"));
  EXPECT_TRUE(spec.extra_env.empty());
  EXPECT_EQ(spec.cwd, "/work");
}

TEST(TrainerCommandTest, GpuRankOfAMultiRankResumedJob) {
  const TrainerSetup setup{"/bin/qlorad-train", "/work", 2, {}};
  v1::Assignment a = Start("j", 1);
  a.set_rank(1);
  a.set_world_size(4);
  a.set_rendezvous("10.0.0.5:29500");
  a.set_resume_from("/work/runs/j/checkpoint-50");
  const process::SpawnSpec spec = TrainerSpawnSpec(setup, a, "/s.yaml");
  EXPECT_THAT(spec.argv,
              ElementsAre("/bin/qlorad-train", "run", "/s.yaml", "--json", "--device", "cuda",
                          "--attempt", "1", "--resume", "/work/runs/j/checkpoint-50", "--rank", "1",
                          "--world-size", "4", "--rendezvous", "10.0.0.5:29500"));
  EXPECT_THAT(spec.extra_env, ElementsAre("CUDA_VISIBLE_DEVICES=2"));
}

}  // namespace
}  // namespace qlorad::agent
