// The agent against a fake coordinator (fake_coordinator.h): a real gRPC server on loopback.
#include "worker/agent/agent.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <memory>

#include "tests/unit/agent/fake_coordinator.h"
#include "tests/unit/agent/script_fixture.h"

namespace qlorad::agent {
namespace {

using testing::FakeCoordinator;
using testing::HasExitFor;
using testing::Served;
using testing::StartOrder;
using testing::TempDir;
using testing::UnavailableCoordinator;
using testing::WaitUntil;
using namespace std::chrono_literals;

bool HasMetrics(const std::vector<v1::TrainerEvent>& events) {
  return std::any_of(events.begin(), events.end(),
                     [](const v1::TrainerEvent& e) { return e.has_metrics(); });
}

// An Agent running on its own thread; stopped and joined when it goes out of scope, so a failed
// ASSERT does not leave a thread behind.
class RunningAgent {
 public:
  explicit RunningAgent(AgentOptions options)
      : agent_(std::move(options)), thread_([this] { status_ = agent_.Run(); }) {}
  ~RunningAgent() { Stop(); }
  Status Stop() {
    agent_.Stop();
    if (thread_.joinable()) thread_.join();
    return status_;
  }

 private:
  Agent agent_;
  Status status_;
  std::thread thread_;
};

class AgentTest : public ::testing::Test {
 protected:
  AgentOptions Options(int port) {
    AgentOptions o;
    o.coordinator = "127.0.0.1:" + std::to_string(port);
    o.name = "test-cpu";
    o.hostname = "test";
    o.device.set_kind("cpu");
    o.device.set_name("test cpu");
    o.device.set_total_memory_bytes(1 << 30);
    o.trainer = {trainer_, dir_.path(), std::nullopt, {dir_.path(), {dir_.path()}, dir_.path()}};
    o.grace_period = 2s;
    o.max_backoff = 200ms;
    o.shutdown_flush = 3s;
    o.version = "test";
    return o;
  }

  TempDir dir_;
  std::filesystem::path trainer_ = dir_.Script("qlorad-train", testing::kFakeQloradTrain);
};

TEST_F(AgentTest, RunsAnAssignedJobAndReportsEveryEventThenExits) {
  FakeCoordinator coordinator;
  Served served(&coordinator, 0);
  RunningAgent agent(Options(served.port()));

  ASSERT_TRUE(WaitUntil([&] { return !coordinator.Registrations().empty(); }));
  const v1::RegisterRequest reg = coordinator.Registrations()[0];
  EXPECT_EQ(reg.name(), "test-cpu");
  ASSERT_EQ(reg.devices_size(), 1);
  EXPECT_EQ(reg.devices(0).kind(), "cpu");

  coordinator.Send(StartOrder("job-1", "name: quick\n"));
  ASSERT_TRUE(WaitUntil([&] { return HasExitFor(coordinator.Events(), "job-1"); }));
  std::vector<std::string> kinds;
  for (const auto& e : coordinator.Events()) {
    EXPECT_EQ(e.job_id(), "job-1");
    if (e.has_started()) kinds.push_back("started");
    if (e.has_metrics()) kinds.push_back("metrics");
    if (e.has_log()) kinds.push_back("log");
    if (e.has_done()) kinds.push_back("done");
    if (e.has_exit()) kinds.push_back("exit");
  }
  // stderr and stdout are separate pipes: the stderr log line may land anywhere before exit.
  ASSERT_EQ(kinds.size(), 5u);
  EXPECT_EQ(kinds.back(), "exit");
  std::vector<std::string> stdout_kinds;
  for (const auto& k : kinds) {
    if (k != "log") stdout_kinds.push_back(k);
  }
  EXPECT_EQ(stdout_kinds, (std::vector<std::string>{"started", "metrics", "done", "exit"}));
  EXPECT_EQ(coordinator.Events().back().exit().exit_code(), 0);
  EXPECT_EQ(coordinator.Events().back().exit().stderr_tail(), "tokenizer warning\n");

  ASSERT_TRUE(WaitUntil([&] { return coordinator.Heartbeats().size() >= 2; }));
  EXPECT_EQ(coordinator.Heartbeats().back().worker_id(), "w1");

  EXPECT_TRUE(agent.Stop().ok());
}

TEST_F(AgentTest, ReportsTheGpusFreeMemoryOnlyWhileNoTrainerRuns) {
  FakeCoordinator coordinator;
  Served served(&coordinator, 0);
  AgentOptions options = Options(served.port());
  options.device.set_kind("cuda");
  options.gpu_free_memory = []() -> StatusOr<int64_t> { return int64_t{3} << 30; };
  RunningAgent agent(std::move(options));
  ASSERT_TRUE(WaitUntil([&] { return !coordinator.Registrations().empty(); }));
  EXPECT_EQ(coordinator.Registrations()[0].devices(0).free_memory_bytes(), int64_t{3} << 30);
  ASSERT_TRUE(WaitUntil([&] { return !coordinator.Heartbeats().empty(); }));
  EXPECT_EQ(coordinator.Heartbeats().back().gpu_free_memory_bytes(), int64_t{3} << 30);

  // While its trainer runs, the GPU's free memory says nothing about the next job's room.
  coordinator.Send(StartOrder("job-h", "name: hang\n"));
  ASSERT_TRUE(WaitUntil([&] { return HasMetrics(coordinator.Events()); }));
  const size_t seen = coordinator.Heartbeats().size();
  ASSERT_TRUE(WaitUntil([&] { return coordinator.Heartbeats().size() >= seen + 2; }));
  const v1::HeartbeatRequest busy = coordinator.Heartbeats().back();
  ASSERT_EQ(busy.running_job_ids_size(), 1);
  EXPECT_FALSE(busy.has_gpu_free_memory_bytes());
  EXPECT_TRUE(agent.Stop().ok());
}

TEST_F(AgentTest, StopCancelsTheRunningTrainerAndFlushesItsEvents) {
  FakeCoordinator coordinator;
  Served served(&coordinator, 0);
  RunningAgent agent(Options(served.port()));
  coordinator.Send(StartOrder("job-h", "name: hang\n"));
  ASSERT_TRUE(WaitUntil([&] { return HasMetrics(coordinator.Events()); }));
  EXPECT_TRUE(agent.Stop().ok());
  const auto events = coordinator.Events();
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_exit());
  EXPECT_TRUE(events.back().exit().cancelled());
  std::vector<v1::TrainerEvent> from_stdout;
  for (const auto& e : events) {
    if (!e.has_log()) from_stdout.push_back(e);
  }
  ASSERT_GE(from_stdout.size(), 2u);
  EXPECT_TRUE(from_stdout[from_stdout.size() - 2].has_checkpoint()) << "SIGTERM let it checkpoint";
}

TEST_F(AgentTest, SurvivesACoordinatorRestartAndRegistersAgain) {
  FakeCoordinator first;
  auto served = std::make_unique<Served>(&first, 0);
  const int port = served->port();
  RunningAgent agent(Options(port));
  ASSERT_TRUE(WaitUntil([&] { return first.Registrations().size() == 1; }));

  served.reset();  // the coordinator goes away, comes back refusing calls while it starts...
  UnavailableCoordinator starting;
  auto refusing = std::make_unique<Served>(&starting, port);
  ASSERT_EQ(refusing->port(), port);
  // ...and the agent keeps trying through that: a second registration came after the first failed.
  ASSERT_TRUE(WaitUntil([&] { return starting.RefusedRegistrations() >= 2; }));
  refusing.reset();
  FakeCoordinator second;
  Served again(&second, port);
  ASSERT_EQ(again.port(), port);
  ASSERT_TRUE(WaitUntil([&] { return !second.Registrations().empty(); }));

  second.Send(StartOrder("job-2", "name: after restart\n"));
  ASSERT_TRUE(WaitUntil([&] { return HasExitFor(second.Events(), "job-2"); }));
  EXPECT_TRUE(agent.Stop().ok());
}

TEST_F(AgentTest, EventsOfAJobThatEndsWhileTheCoordinatorIsDownAreDeliveredLater) {
  FakeCoordinator first;
  auto served = std::make_unique<Served>(&first, 0);
  const int port = served->port();
  RunningAgent agent(Options(port));
  first.Send(StartOrder("job-3", "name: gated\n"));
  ASSERT_TRUE(WaitUntil([&] { return !first.Events().empty(); }));

  served.reset();  // down while the trainer finishes
  UnavailableCoordinator starting;
  auto refusing = std::make_unique<Served>(&starting, port);
  ASSERT_EQ(refusing->port(), port);
  std::ofstream(dir_.path() / "go").close();  // the trainer may finish now
  ASSERT_TRUE(WaitUntil([&] { return HasExitFor(starting.RefusedEvents(), "job-3"); }))
      << "the run ended while the coordinator was down";
  refusing.reset();
  FakeCoordinator second;
  Served again(&second, port);
  ASSERT_TRUE(WaitUntil([&] { return HasExitFor(second.Events(), "job-3"); }));

  // Nothing lost, nothing out of order: the two coordinators together saw the whole run.
  std::vector<v1::TrainerEvent> all = first.Events();
  for (const auto& e : second.Events()) all.push_back(e);
  std::vector<std::string> from_stdout;
  for (const auto& e : all) {
    if (e.has_started()) from_stdout.push_back("started");
    if (e.has_metrics()) from_stdout.push_back("metrics");
    if (e.has_done()) from_stdout.push_back("done");
    if (e.has_exit()) from_stdout.push_back("exit");
  }
  EXPECT_EQ(from_stdout, (std::vector<std::string>{"started", "metrics", "done", "exit"}));
  EXPECT_EQ(all.size(), 5u);  // and the stderr line
  EXPECT_TRUE(agent.Stop().ok());
}

TEST_F(AgentTest, RegisteringAgainReportsTheRunningTrainer) {
  FakeCoordinator coordinator;
  Served served(&coordinator, 0);
  RunningAgent agent(Options(served.port()));
  coordinator.Send(StartOrder("job-r", "name: hang\n"));
  ASSERT_TRUE(WaitUntil([&] { return HasMetrics(coordinator.Events()); }));
  coordinator.ForgetWorkers(true);
  ASSERT_TRUE(WaitUntil([&] { return coordinator.Registrations().size() >= 2; }));
  coordinator.ForgetWorkers(false);
  const v1::RegisterRequest reg = coordinator.Registrations()[1];
  ASSERT_EQ(reg.attempts_size(), 1);
  EXPECT_EQ(reg.attempts(0).job_id(), "job-r");
  EXPECT_EQ(reg.attempts(0).attempt(), StartOrder("job-r", "").attempt());
  EXPECT_EQ(reg.attempts(0).last_step(), 1);
  EXPECT_GT(reg.attempts(0).pid(), 0);
  EXPECT_TRUE(agent.Stop().ok());
}

TEST_F(AgentTest, RegistersAgainWhenTheCoordinatorForgetsIt) {
  FakeCoordinator coordinator;
  Served served(&coordinator, 0);
  RunningAgent agent(Options(served.port()));
  ASSERT_TRUE(WaitUntil([&] { return coordinator.Registrations().size() == 1; }));
  coordinator.ForgetWorkers(true);
  ASSERT_TRUE(WaitUntil([&] { return coordinator.Registrations().size() >= 2; }));
  coordinator.ForgetWorkers(false);
  EXPECT_TRUE(agent.Stop().ok());
}

}  // namespace
}  // namespace qlorad::agent
