// The qlorad-train executable as the worker agent sees it: a real child process, JSON events on
// its stdout, and the exit codes the coordinator relies on (0 done, 2 bad input, 3 SIGTERM).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>

#include "tests/unit/trainer/test_util.h"

namespace qlorad::trainer {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing::TempDir;
using testing::WriteFile;

struct ProcessResult {
  int exit_code = -1;
  std::vector<json> events;
};

// Runs qlorad-train with `args`; `on_event` sees each stdout event as it arrives, with the pid.
ProcessResult RunTrainer(const std::vector<std::string>& args,
                         const std::function<void(const json&, pid_t)>& on_event = {}) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv = {const_cast<char*>(QLORAD_TRAIN_BIN)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  ProcessResult result;
  FILE* out = fdopen(fds[0], "r");
  char* line = nullptr;
  size_t cap = 0;
  while (getline(&line, &cap, out) > 0) {
    json event = json::parse(line);  // every stdout line must be a JSON event
    if (on_event) on_event(event, pid);
    result.events.push_back(std::move(event));
  }
  free(line);
  fclose(out);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

class TrainerCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(
        RunTrainer({"make-tiny-model", "--out", dir_ / "model", "--seed", "1", "--json"}).exit_code,
        0);
    std::string data;
    for (int i = 0; i < 16; ++i)
      data += "{\"text\": \"hello world number " + std::to_string(i) + "\"}\n";
    WriteFile(dir_ / "data.jsonl", data);
  }

  std::string WriteSpec(const std::string& train, const std::string& data_path) {
    const std::string path = dir_ / "job.yaml";
    WriteFile(path, "name: cli\nmodel: {path: " + dir_ / "model" +
                        "}\nquantization: {type: none}\n" +
                        "lora: {r: 2, alpha: 4, target_modules: [q_proj, v_proj]}\n" +
                        "data: {path: " + data_path + ", max_seq_len: 16}\n" + "train: " + train +
                        "\nresources: {device: cpu}\ncheckpoint: {every_steps: 0, output_dir: " +
                        dir_ / "out" + "}\n");
    return path;
  }

  TempDir dir_;
};

TEST_F(TrainerCliTest, RunEndsWithDoneAndExitZero) {
  auto r = RunTrainer(
      {"run",
       WriteSpec("{max_steps: 3, micro_batch_size: 2, precision: fp32}", dir_ / "data.jsonl"),
       "--json"});
  EXPECT_EQ(r.exit_code, 0);
  ASSERT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.front()["event"], "started");
  EXPECT_EQ(r.events.front()["device"], "cpu");
  EXPECT_EQ(r.events.back()["event"], "done");
  EXPECT_EQ(r.events.back()["adapter_path"], dir_ / "out/adapter");
  int metrics = 0;
  for (const auto& e : r.events) metrics += e["event"] == "metrics";
  EXPECT_EQ(metrics, 3);
}

TEST_F(TrainerCliTest, BadDatasetLineExitsTwoWithFileAndLine) {
  WriteFile(dir_ / "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{oops\n");
  auto r = RunTrainer({"run", WriteSpec("{max_steps: 3}", dir_ / "bad.jsonl"), "--json"});
  EXPECT_EQ(r.exit_code, 2);
  ASSERT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.back()["event"], "error");
  EXPECT_THAT(r.events.back()["message"].get<std::string>(),
              HasSubstr(dir_ / "bad.jsonl" + ":3: "));
}

TEST_F(TrainerCliTest, BadSpecFieldExitsTwoAndNamesTheField) {
  auto r = RunTrainer({"run", WriteSpec("{max_steps: 3, lr: -1}", dir_ / "data.jsonl"), "--json"});
  EXPECT_EQ(r.exit_code, 2);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0]["event"], "error");
  EXPECT_EQ(r.events[0]["field"], "train.lr");
  auto missing = RunTrainer({"run", dir_ / "nope.yaml", "--json"});
  EXPECT_EQ(missing.exit_code, 2);
}

TEST_F(TrainerCliTest, SigtermCheckpointsAndExitsThree) {
  bool sent = false;
  auto r = RunTrainer(
      {"run",
       WriteSpec("{max_steps: 100000, micro_batch_size: 1, precision: fp32}", dir_ / "data.jsonl"),
       "--json"},
      [&sent](const json& e, pid_t pid) {
        if (e["event"] == "metrics" && !sent) {
          kill(pid, SIGTERM);
          sent = true;
        }
      });
  EXPECT_EQ(r.exit_code, 3);
  ASSERT_GE(r.events.size(), 2u);
  const json& last = r.events.back();
  EXPECT_EQ(last["event"], "checkpoint");
  EXPECT_THAT(last["path"].get<std::string>(), HasSubstr(dir_ / "out/checkpoints/step-"));
  // Resuming continues from that step instead of starting over.
  const int64_t stopped_at = last["step"].get<int64_t>();
  int64_t first_resumed_step = -1;
  auto resumed = RunTrainer({"run", dir_ / "job.yaml", "--json", "--resume", dir_ / "out"},
                            [&](const json& e, pid_t pid) {
                              // Later metrics may follow: the step in flight when SIGTERM lands
                              // still completes.
                              if (e["event"] == "metrics" && first_resumed_step < 0) {
                                first_resumed_step = e["step"].get<int64_t>();
                                kill(pid, SIGTERM);
                              }
                            });
  EXPECT_EQ(first_resumed_step, stopped_at + 1);
  EXPECT_EQ(resumed.exit_code, 3);
}

}  // namespace
}  // namespace qlorad::trainer
