#include "worker/agent/trainer_run.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <mutex>
#include <vector>

#include "tests/unit/agent/script_fixture.h"

namespace qlorad::agent {
namespace {

using ::testing::ElementsAre;
using testing::EventLog;
using testing::TempDir;
using testing::WaitUntil;
using namespace std::chrono_literals;

// The payload kind of each event: "metrics", "log", ..., "exit".
std::vector<std::string> Kinds(const std::vector<v1::TrainerEvent>& events) {
  std::vector<std::string> kinds;
  for (const v1::TrainerEvent& e : events) {
    const auto* field = e.GetDescriptor()->FindOneofByName("payload");
    const auto* set = e.GetReflection()->GetOneofFieldDescriptor(e, field);
    kinds.push_back(set == nullptr ? "none" : set->name());
  }
  return kinds;
}

const EventContext kCtx{"job-1", 0, 0};

struct Finished {
  pid_t pid = 0;
  std::vector<v1::TrainerEvent> events;
};

// Runs a fake trainer script until it exits.
Finished RunToExit(const std::string& body) {
  TempDir dir;
  const auto script = dir.Script("train.sh", body);
  EventLog log;
  auto run = TrainerRun::Start({.argv = {script.string()}}, kCtx, log.Sink());
  EXPECT_TRUE(run.ok()) << run.status().ToString();
  if (!run.ok()) return {};
  (*run)->Wait();
  return {(*run)->pid(), log.Events()};
}

// A fake qlorad-train: the event lines of a short run, and `stderr_lines` numbered stderr lines.
std::string FakeTrainer(int stderr_lines, const std::string& ending) {
  return R"(echo '{"event":"started","pid":'$$',"total_steps":2,"device":"cpu","rank":0,"world_size":1}'
sleep 0.05
i=1
while [ $i -le )" +
         std::to_string(stderr_lines) + R"( ]; do echo "stderr line $i" >&2; i=$((i+1)); done
sleep 0.05
echo '{"event":"metrics","step":1,"total_steps":2,"loss":2.5,"lr":0.001,"grad_norm":1.0}'
echo 'plain text'
echo '{"event":"checkpoint","step":2,"path":"/tmp/ck"}'
echo '{"event":"done","steps":2,"adapter_path":"/tmp/ad","final_loss":2.0}'
)" + ending;
}

TEST(TrainerRunTest, EventsArriveInOrderWithExitLast) {
  const Finished run = RunToExit(FakeTrainer(2, "exit 0\n"));
  const auto& events = run.events;
  ASSERT_THAT(Kinds(events),
              ElementsAre("started", "log", "log", "metrics", "log", "checkpoint", "done", "exit"));
  EXPECT_EQ(events[0].started().pid(), run.pid);
  EXPECT_EQ(events[1].log().message(), "stderr line 1");
  EXPECT_EQ(events[1].log().source(), "trainer");
  EXPECT_EQ(events[1].log().level(), "info");
  EXPECT_DOUBLE_EQ(events[3].metrics().loss(), 2.5);
  EXPECT_EQ(events[4].log().message(), "plain text");
  const auto& exit = events.back().exit();
  EXPECT_EQ(exit.exit_code(), 0);
  EXPECT_EQ(exit.signal(), 0);
  EXPECT_FALSE(exit.cancelled());
  EXPECT_EQ(exit.stderr_tail(), "stderr line 1\nstderr line 2\n");
  for (const auto& e : events) {
    EXPECT_EQ(e.job_id(), "job-1");
  }
}

TEST(TrainerRunTest, CrashKeepsTheLastFortyStderrLines) {
  const auto events = RunToExit(FakeTrainer(45, "exit 7\n")).events;
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_exit());
  EXPECT_EQ(events.back().exit().exit_code(), 7);
  std::string expected;
  for (int i = 6; i <= 45; ++i) expected += "stderr line " + std::to_string(i) + "\n";
  EXPECT_EQ(events.back().exit().stderr_tail(), expected);
  // Every stderr line is also forwarded, not only the tail.
  int stderr_logs = 0;
  for (const auto& e : events) {
    if (e.has_log() && e.log().message().rfind("stderr line ", 0) == 0) ++stderr_logs;
  }
  EXPECT_EQ(stderr_logs, 45);
}

TEST(TrainerRunTest, KilledBySignalReportsItWithExitCodeMinusOne) {
  const auto events = RunToExit(FakeTrainer(1, "kill -ABRT $$\n")).events;
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_exit());
  EXPECT_EQ(events.back().exit().exit_code(), -1);
  EXPECT_EQ(events.back().exit().signal(), SIGABRT);
  EXPECT_EQ(events.back().exit().stderr_tail(), "stderr line 1\n");
}

TEST(TrainerRunTest, CancelMarksTheExitCancelled) {
  TempDir dir;
  const auto script = dir.Script(
      "loop.sh", R"(trap 'echo "{\"event\":\"checkpoint\",\"step\":3,\"path\":\"/c\"}"; exit 0' TERM
echo '{"event":"started","pid":1}'
while true; do sleep 0.05; done
)");
  EventLog log;
  auto run = TrainerRun::Start({.argv = {script.string()}}, kCtx, log.Sink());
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  ASSERT_TRUE(WaitUntil([&] { return !log.Events().empty(); }));
  (*run)->Cancel(10s);
  (*run)->Wait();
  // Log lines left out: the shell may report on stderr that its sleep was terminated.
  std::vector<std::string> kinds;
  for (const std::string& k : Kinds(log.Events())) {
    if (k != "log") kinds.push_back(k);
  }
  EXPECT_THAT(kinds, ElementsAre("started", "checkpoint", "exit"));
  EXPECT_TRUE(log.Events().back().exit().cancelled());
  EXPECT_EQ(log.Events().back().exit().exit_code(), 0);
}

}  // namespace
}  // namespace qlorad::agent
