#include "worker/agent/job_slot.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <mutex>
#include <sstream>

#include "tests/unit/agent/script_fixture.h"

namespace qlorad::agent {
namespace {

using testing::EventLog;
using ::testing::HasSubstr;
using testing::TempDir;
using testing::WaitUntil;
using namespace std::chrono_literals;

v1::Assignment Order(v1::Assignment::Kind kind, const std::string& job_id) {
  v1::Assignment a;
  a.set_kind(kind);
  a.set_job_id(job_id);
  a.set_attempt(1);
  a.set_spec_yaml("name: t\n");
  a.set_world_size(1);
  return a;
}

// A trainer that prints `line` and runs until SIGTERM, then exits 0.
std::filesystem::path RunsUntilTerm(TempDir& dir, const std::string& line) {
  return dir.Script("qlorad-train",
                    "trap 'exit 0' TERM\necho '" + line + "'\nwhile true; do sleep 0.05; done\n");
}

// The worker's default: read and write under its work dir.
PathRoots WorkDirRoots(TempDir& dir) {
  return {dir.path(), {dir.path()}, dir.path()};
}

std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(JobSlotTest, StartRunsTheTrainerInTheWorkDirWithTheWrittenSpec) {
  TempDir dir;
  const auto trainer = dir.Script("qlorad-train", R"(echo "$PWD $*" > args.txt
cat "$2" > spec-seen.yaml
echo '{"event":"done","steps":1,"adapter_path":"/a","final_loss":1.0}'
)");
  EventLog events;
  JobSlot slot({trainer, dir.path(), std::nullopt, WorkDirRoots(dir)}, 1s, events.Sink());
  slot.Handle(Order(v1::Assignment::KIND_START, "job-a"));
  ASSERT_TRUE(WaitUntil([&] { return events.EndsWithExit(); }));
  const auto all = events.Events();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_TRUE(all[0].has_done());
  EXPECT_EQ(all[1].exit().exit_code(), 0);
  const auto spec = dir.path() / "jobs/job-a/attempt-1/job.yaml";
  EXPECT_EQ(ReadAll(dir.path() / "args.txt"),
            dir.path().string() + " run " + spec.string() +
                " --json --device cpu --attempt 1 --rank 0 --world-size 1\n");
  EXPECT_EQ(ReadAll(dir.path() / "spec-seen.yaml"), "name: t\n");
  EXPECT_TRUE(WaitUntil([&] { return slot.RunningJobIds().empty(); }));
}

TEST(JobSlotTest, StartWhileBusyIsRefusedAndCancelStopsTheRunningJob) {
  TempDir dir;
  const auto trainer = RunsUntilTerm(dir, R"({"event":"started","pid":1})");
  EventLog events;
  JobSlot slot({trainer, dir.path(), std::nullopt, WorkDirRoots(dir)}, 5s, events.Sink());
  slot.Handle(Order(v1::Assignment::KIND_START, "job-a"));
  ASSERT_TRUE(WaitUntil([&] { return !events.Events().empty(); }));
  EXPECT_EQ(slot.RunningJobIds(), std::vector<std::string>{"job-a"});

  slot.Handle(Order(v1::Assignment::KIND_START, "job-b"));
  auto all = events.Events();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].job_id(), "job-b");
  EXPECT_EQ(all[1].log().source(), "worker");
  EXPECT_THAT(all[1].log().message(), HasSubstr("busy with job job-a"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "jobs/job-b"));

  slot.Handle(Order(v1::Assignment::KIND_CANCEL, "job-other"));  // not ours: no effect
  slot.Handle(Order(v1::Assignment::KIND_CANCEL, "job-a"));
  ASSERT_TRUE(WaitUntil([&] { return events.EndsWithExit(); }));
  all = events.Events();
  EXPECT_EQ(all.back().job_id(), "job-a");
  EXPECT_TRUE(all.back().exit().cancelled());
  EXPECT_EQ(all.back().exit().exit_code(), 0);
}

TEST(JobSlotTest, ACancelOfAnotherAttemptLeavesTheTrainerRunning) {
  TempDir dir;
  const auto trainer = RunsUntilTerm(dir, R"({"event":"metrics","step":7,"loss":1.0})");
  EventLog events;
  JobSlot slot({trainer, dir.path(), std::nullopt, WorkDirRoots(dir)}, 5s, events.Sink());
  slot.Handle(Order(v1::Assignment::KIND_START, "job-a"));  // attempt 1
  ASSERT_TRUE(WaitUntil([&] {
    const auto running = slot.RunningAttempts();
    return running.size() == 1 && running[0].last_step() == 7;
  }));
  const v1::RunningAttempt running = slot.RunningAttempts()[0];
  EXPECT_EQ(running.job_id(), "job-a");
  EXPECT_EQ(running.attempt(), 1);
  EXPECT_GT(running.pid(), 0);

  v1::Assignment stale = Order(v1::Assignment::KIND_CANCEL, "job-a");
  stale.set_attempt(0);  // a stop order meant for an earlier attempt of the same job
  slot.Handle(stale);
  EXPECT_FALSE(WaitUntil([&] { return events.EndsWithExit(); }, 300ms));
  slot.Handle(Order(v1::Assignment::KIND_CANCEL, "job-a"));
  ASSERT_TRUE(WaitUntil([&] { return events.EndsWithExit(); }));
  EXPECT_TRUE(events.Events().back().exit().cancelled());
  EXPECT_TRUE(slot.RunningAttempts().empty());
}

TEST(JobSlotTest, MissingTrainerIsReportedAsAnErrorAndExit127) {
  TempDir dir;
  EventLog events;
  JobSlot slot({dir.path() / "no-trainer", dir.path(), std::nullopt, WorkDirRoots(dir)}, 1s,
               events.Sink());
  slot.Handle(Order(v1::Assignment::KIND_START, "job-a"));
  const auto all = events.Events();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_THAT(all[0].error().message(), HasSubstr("no-trainer"));
  EXPECT_EQ(all[1].exit().exit_code(), 127);
  EXPECT_THAT(all[1].exit().stderr_tail(), HasSubstr("no-trainer"));
  EXPECT_TRUE(slot.RunningJobIds().empty());
}

TEST(JobSlotTest, APathOutsideTheRootsRunsNoTrainerAndFailsTheJobAsBadInput) {
  TempDir dir;
  const auto trainer = dir.Script("qlorad-train", "touch ran\n");
  std::filesystem::create_directories(dir.path() / "work");
  const PathRoots roots{dir.path() / "work", {dir.path() / "work"}, dir.path() / "work"};
  EventLog events;
  JobSlot slot({trainer, dir.path() / "work", std::nullopt, roots}, 1s, events.Sink());
  v1::Assignment start = Order(v1::Assignment::KIND_START, "job-a");
  start.set_spec_yaml("name: t\nmodel: {path: m}\ndata: {path: ../secret.jsonl}\n");
  slot.Handle(start);
  const auto all = events.Events();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].error().field(), "data.path");
  EXPECT_THAT(all[0].error().message(),
              HasSubstr("data.path: ../secret.jsonl (" + (dir.path() / "secret.jsonl").string() +
                        ") is outside the folders this worker may read: " +
                        (dir.path() / "work").string()));
  EXPECT_EQ(all[1].exit().exit_code(), 2) << "the coordinator's code for a spec not to retry";
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "work" / "ran"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "work" / "jobs")) << "no spec written";

  // The same slot runs a spec inside its roots; resume_from is checked too.
  start.set_spec_yaml("name: t\nmodel: {path: m}\ndata: {path: d.jsonl}\n");
  start.set_resume_from("/tmp");
  slot.Handle(start);
  ASSERT_EQ(events.Events().size(), 4u);
  EXPECT_EQ(events.Events()[2].error().field(), "resume_from");
  start.set_resume_from("runs/t/checkpoints/attempt-0/step-2");
  slot.Handle(start);
  ASSERT_TRUE(WaitUntil([&] { return events.Events().size() > 4u && events.EndsWithExit(); }));
  EXPECT_EQ(events.Events().back().exit().exit_code(), 0) << events.Events().back().DebugString();
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "work" / "ran"));
}

}  // namespace
}  // namespace qlorad::agent
