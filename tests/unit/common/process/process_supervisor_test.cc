#include "common/process/process_supervisor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "tests/unit/common/process/script_fixture.h"

namespace qlorad::process {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TempDir;
using testing::WaitUntil;
using namespace std::chrono_literals;

// Everything a child said, in the order the supervisor delivered it: "out:..", "err:..", "exit".
class Recorder {
 public:
  ProcessCallbacks Callbacks() {
    return {[this](std::string_view l) { Add("out:" + std::string(l)); },
            [this](std::string_view l) { Add("err:" + std::string(l)); },
            [this](const ProcessExit&) { Add("exit"); }};
  }
  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }
  // Without stderr lines: the shell may say "Terminated" there about a sleep it was running.
  std::vector<std::string> NonStderrLines() {
    std::vector<std::string> out;
    for (std::string& l : Lines()) {
      if (l.rfind("err:", 0) != 0) out.push_back(std::move(l));
    }
    return out;
  }
  bool Saw(const std::string& line) {
    std::lock_guard<std::mutex> lock(mu_);
    return std::find(lines_.begin(), lines_.end(), line) != lines_.end();
  }

 private:
  void Add(std::string line) {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.push_back(std::move(line));
  }
  std::mutex mu_;
  std::vector<std::string> lines_;
};

std::unique_ptr<ProcessSupervisor> StartOrDie(const SpawnSpec& spec, Recorder& rec) {
  auto started = ProcessSupervisor::Start(spec, rec.Callbacks());
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  return started.ok() ? std::move(started).value() : nullptr;
}

TEST(ProcessSupervisorTest, DeliversStdoutAndStderrLinesThenExitZero) {
  TempDir dir;
  // Each write is followed by a pause so the order across the two pipes is deterministic.
  const auto script = dir.Script("ok.sh", R"(echo '{"event":"log","message":"a"}'
sleep 0.05
echo 'warming up' >&2
sleep 0.05
printf 'no newline at the end'
exit 0
)");
  Recorder rec;
  auto proc = StartOrDie({.argv = {script.string()}}, rec);
  ASSERT_NE(proc, nullptr);
  const ProcessExit exit = proc->Wait();
  EXPECT_EQ(exit.exit_code, 0);
  EXPECT_EQ(exit.signal, 0);
  EXPECT_FALSE(exit.cancelled);
  EXPECT_TRUE(proc->Finished());
  EXPECT_THAT(rec.Lines(), ElementsAre(R"(out:{"event":"log","message":"a"})", "err:warming up",
                                       "out:no newline at the end", "exit"));
}

TEST(ProcessSupervisorTest, ReportsANonZeroExitCode) {
  TempDir dir;
  const auto script = dir.Script("fail.sh", "echo 'bad spec' >&2\nexit 7\n");
  Recorder rec;
  auto proc = StartOrDie({.argv = {script.string()}}, rec);
  ASSERT_NE(proc, nullptr);
  const ProcessExit exit = proc->Wait();
  EXPECT_EQ(exit.exit_code, 7);
  EXPECT_EQ(exit.signal, 0);
  EXPECT_THAT(rec.Lines(), ElementsAre("err:bad spec", "exit"));
}

TEST(ProcessSupervisorTest, ReportsTheSignalThatKilledTheChild) {
  TempDir dir;
  const auto script = dir.Script("segv.sh", "echo before\nkill -SEGV $$\necho after\n");
  Recorder rec;
  auto proc = StartOrDie({.argv = {script.string()}}, rec);
  ASSERT_NE(proc, nullptr);
  const ProcessExit exit = proc->Wait();
  EXPECT_EQ(exit.exit_code, -1);
  EXPECT_EQ(exit.signal, SIGSEGV);
  EXPECT_FALSE(exit.cancelled);
  EXPECT_THAT(rec.Lines(), ElementsAre("out:before", "exit"));
}

TEST(ProcessSupervisorTest, PassesArgumentsEnvironmentAndWorkingDirectory) {
  TempDir dir;
  const auto script = dir.Script("env.sh", "echo \"$1|$2|$QLORAD_TEST_VAR|$(pwd)\"\n");
  Recorder rec;
  auto proc = StartOrDie({.argv = {script.string(), "one", "two words"},
                          .extra_env = {"QLORAD_TEST_VAR=hello"},
                          .cwd = dir.path().string()},
                         rec);
  ASSERT_NE(proc, nullptr);
  EXPECT_EQ(proc->Wait().exit_code, 0);
  EXPECT_THAT(rec.Lines(), ElementsAre("out:one|two words|hello|" + dir.path().string(), "exit"));
}

TEST(ProcessSupervisorTest, MissingProgramIsAnErrorNamingIt) {
  Recorder rec;
  auto started = ProcessSupervisor::Start({.argv = {"/nonexistent/qlorad-train"}}, rec.Callbacks());
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(started.status().message(), HasSubstr("/nonexistent/qlorad-train"));
  EXPECT_THAT(started.status().message(), HasSubstr("No such file"));
}

// A child that runs until signalled, with `trap` as its SIGTERM handler; returns once it has
// said "ready" (so the handler is in place).
std::unique_ptr<ProcessSupervisor> StartLoopingChild(const TempDir& dir, const std::string& trap,
                                                     Recorder& rec) {
  const auto script =
      dir.Script("loop.sh", trap + " TERM\necho ready\nwhile true; do sleep 0.05; done\n");
  auto proc = StartOrDie({.argv = {script.string()}}, rec);
  EXPECT_TRUE(proc != nullptr && WaitUntil([&] { return rec.Saw("out:ready"); }));
  return proc;
}

// Starts a child whose SIGTERM handler checkpoints and exits 3, lets `before_cancel` act on it,
// cancels with a long grace period and expects the handler, not SIGKILL, to end it.
void ExpectCancelledChildExitsOnItsOwn(const std::function<void(pid_t)>& before_cancel) {
  TempDir dir;
  Recorder rec;
  auto proc = StartLoopingChild(dir, "trap 'echo checkpointing; exit 3'", rec);
  ASSERT_NE(proc, nullptr);
  before_cancel(proc->pid());
  const auto t0 = std::chrono::steady_clock::now();
  proc->Cancel(30s);
  const ProcessExit exit = proc->Wait();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "should not have needed SIGKILL";
  EXPECT_EQ(exit.exit_code, 3);
  EXPECT_EQ(exit.signal, 0);
  EXPECT_TRUE(exit.cancelled);
  EXPECT_THAT(rec.NonStderrLines(), ElementsAre("out:ready", "out:checkpointing", "exit"));
}

TEST(ProcessSupervisorTest, CancelledChildThatTrapsSigtermExitsOnItsOwn) {
  ExpectCancelledChildExitsOnItsOwn([](pid_t) {});
}

// A stopped child cannot act on SIGTERM; cancelling also continues it, so it still checkpoints
// and exits instead of waiting out the grace period for SIGKILL.
TEST(ProcessSupervisorTest, CancelledStoppedChildIsContinuedAndExitsOnItsOwn) {
  ExpectCancelledChildExitsOnItsOwn([](pid_t pid) { ASSERT_EQ(::kill(-pid, SIGSTOP), 0); });
}

// Signal passes a signal on (as `qlorad-train launch` does with its SIGTERM/SIGINT) without
// cancelling: the exit is the child's own.
TEST(ProcessSupervisorTest, SignalReachesTheChildWithoutCancellingIt) {
  TempDir dir;
  Recorder rec;
  auto proc = StartLoopingChild(dir, "trap 'echo interrupted; exit 3'", rec);
  ASSERT_NE(proc, nullptr);
  proc->Signal(SIGTERM);
  const ProcessExit exit = proc->Wait();
  EXPECT_EQ(exit.exit_code, 3);
  EXPECT_FALSE(exit.cancelled);
  EXPECT_THAT(rec.NonStderrLines(), ElementsAre("out:ready", "out:interrupted", "exit"));
  proc->Signal(SIGTERM);  // after the exit: the pid may be another process's now; a no-op
}

TEST(ProcessSupervisorTest, CancelledChildThatIgnoresSigtermIsKilledAfterTheGracePeriod) {
  TempDir dir;
  Recorder rec;
  auto proc = StartLoopingChild(dir, "trap ''", rec);
  ASSERT_NE(proc, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  proc->Cancel(400ms);
  const ProcessExit exit = proc->Wait();
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 400ms);
  EXPECT_LT(took, 5s);
  EXPECT_EQ(exit.exit_code, -1);
  EXPECT_EQ(exit.signal, SIGKILL);
  EXPECT_TRUE(exit.cancelled);
}

TEST(ProcessSupervisorTest, LeftoverProcessesInTheGroupDoNotDelayTheExit) {
  TempDir dir;
  // The background sleep inherits stdout; without the group kill, EOF would take 60 s.
  const auto script = dir.Script("orphan.sh", "sleep 60 &\necho bye\nexit 0\n");
  Recorder rec;
  auto proc = StartOrDie({.argv = {script.string()}}, rec);
  ASSERT_NE(proc, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  auto exit = proc->WaitFor(4s);
  ASSERT_TRUE(exit.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
  EXPECT_EQ(exit->exit_code, 0);
  EXPECT_THAT(rec.Lines(), ElementsAre("out:bye", "exit"));
}

TEST(ProcessSupervisorTest, DestroyingARunningSupervisorKillsTheChild) {
  TempDir dir;
  const auto marker = dir.path() / "pid";
  const auto script = dir.Script("long.sh", "echo $$ > " + marker.string() + "\nsleep 60\n");
  Recorder rec;
  auto proc = StartOrDie({.argv = {script.string()}}, rec);
  ASSERT_NE(proc, nullptr);
  const pid_t pid = proc->pid();
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(marker); }));
  proc.reset();
  EXPECT_TRUE(rec.Saw("exit"));
  EXPECT_EQ(::kill(pid, 0), -1) << "child still exists";
}

}  // namespace
}  // namespace qlorad::process
