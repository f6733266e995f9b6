// The qlorad-worker executable as a process: flags, signal handling and shutdown, against the
// fake coordinator.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mutex>

#include "common/process/process_supervisor.h"
#include "tests/unit/agent/fake_coordinator.h"
#include "tests/unit/agent/script_fixture.h"

namespace qlorad::agent {
namespace {

using testing::FakeCoordinator;
using ::testing::HasSubstr;
using testing::Served;
using testing::StartOrder;
using testing::TempDir;
using testing::WaitUntil;
using namespace std::chrono_literals;

// qlorad-worker's stderr (its log), gathered while it runs.
class Output {
 public:
  process::ProcessCallbacks Callbacks() {
    auto add = [this](std::string_view line) {
      std::lock_guard<std::mutex> lock(mu_);
      text_.append(line).append("\n");
    };
    return {add, add, nullptr};
  }
  std::string Text() {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }

 private:
  std::mutex mu_;
  std::string text_;
};

TEST(WorkerBinaryTest, SigtermCancelsTheTrainerFlushesItsEventsAndExitsZero) {
  TempDir dir;
  const auto trainer = dir.Script("qlorad-train", testing::kFakeQloradTrain);
  FakeCoordinator coordinator;
  Served served(&coordinator, 0);
  Output output;
  auto worker = process::ProcessSupervisor::Start(
      {.argv = {QLORAD_WORKER_BIN, "--coordinator", "127.0.0.1:" + std::to_string(served.port()),
                "--cpu", "--name", "binary-test", "--work-dir", (dir.path() / "work").string(),
                "--trainer", trainer.string(), "--grace-period-s", "5"}},
      output.Callbacks());
  ASSERT_TRUE(worker.ok()) << worker.status().ToString();
  ASSERT_TRUE(WaitUntil([&] { return !coordinator.Registrations().empty(); })) << output.Text();
  EXPECT_EQ(coordinator.Registrations()[0].name(), "binary-test");
  EXPECT_EQ(coordinator.Registrations()[0].devices(0).kind(), "cpu");

  coordinator.Send(StartOrder("job-s", "name: hang\n"));
  ASSERT_TRUE(WaitUntil([&] {
    for (const auto& e : coordinator.Events()) {
      if (e.has_metrics()) return true;
    }
    return false;
  })) << output.Text();
  EXPECT_TRUE(
      std::filesystem::exists(dir.path() / "work" / "jobs" / "job-s" / "attempt-0" / "job.yaml"));

  (*worker)->Cancel(20s);  // SIGTERM to qlorad-worker (its trainer has a process group of its own)
  const process::ProcessExit exit = (*worker)->Wait();
  EXPECT_EQ(exit.exit_code, 0) << output.Text();
  EXPECT_EQ(exit.signal, 0);
  const auto events = coordinator.Events();
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_exit());
  EXPECT_TRUE(events.back().exit().cancelled());
  EXPECT_THAT(output.Text(), HasSubstr("stopping its trainer"));
}

TEST(WorkerBinaryTest, BadFlagsExitTwoWithAClearMessage) {
  TempDir dir;
  Output output;
  auto worker = process::ProcessSupervisor::Start(
      {.argv = {QLORAD_WORKER_BIN, "--trainer", (dir.path() / "missing-train").string(),
                "--work-dir", (dir.path() / "work").string()}},
      output.Callbacks());
  ASSERT_TRUE(worker.ok()) << worker.status().ToString();
  EXPECT_EQ((*worker)->Wait().exit_code, 2);
  EXPECT_THAT(output.Text(), HasSubstr("--trainer"));
  EXPECT_THAT(output.Text(), HasSubstr("missing-train"));

  Output both;
  auto conflicting = process::ProcessSupervisor::Start(
      {.argv = {QLORAD_WORKER_BIN, "--cpu", "--gpu", "0"}}, both.Callbacks());
  ASSERT_TRUE(conflicting.ok());
  EXPECT_EQ((*conflicting)->Wait().exit_code, 2);
  EXPECT_THAT(both.Text(), HasSubstr("--cpu excludes --gpu"));
}

}  // namespace
}  // namespace qlorad::agent
