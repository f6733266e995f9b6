// Free GPU memory on the coordinator's side, over real gRPC: what workers report (at Register and
// in heartbeats) is what the workers view and /metrics show and what placement goes by, and a job
// a trainer refused for memory moves to a worker with the room, once per worker, failing with the
// trainer's message when none is left.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/dashboard_pages.h"
#include "server/prometheus.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kGiB = int64_t{1} << 30;

// A GPU job (device auto) whose model the coordinator cannot read: it is placed unchecked, and
// only the trainer's own memory check can refuse it.
std::string GpuSpec() {
  return "name: long\n"
         "model: {path: /models/tiny}\n"
         "data: {path: data/train.jsonl}\n"
         "train: {max_steps: 10}\n"
         "scheduling: {max_restarts: 3}\n";
}

// What the trainer's error says when its estimate (`peak_gib` at the peak) does not fit
// (common/memory_estimate.h DoesNotFitMessage, shortened).
v1::TrainerEvent Refusal(const v1::Assignment& order, const std::string& peak_gib) {
  return ErrorEvent(order,
                    "data.max_seq_len: the memory estimate of this job is " + peak_gib +
                        " GiB at its peak (backward of a decoder layer: ...), more than the "
                        "13.5 GiB it may use of the 15.0 GiB free on the device",
                    "data.max_seq_len");
}

bool LogsSay(TestServer& server, const std::string& job_id, const std::string& text) {
  for (const v1::LogLine& line : server.Logs(job_id)) {
    if (line.message().find(text) != std::string::npos) return true;
  }
  return false;
}

// A job placed on "host-small" (16 GiB; `small_free` of it free, -1: not reported) while it was
// the only worker, and "host-big" (80 GiB, all free) registered after: the job's first attempt
// is the small worker's whatever the worker ids.
struct SmallThenBig {
  explicit SmallThenBig(int64_t small_free)
      : server(dir.File("qlorad.db")),
        small(server.channel(), "host-small"),
        big(server.channel(), "host-big") {
    small.SetGpu(16 * kGiB, small_free);
    small.Connect();
    job = server.Submit(GpuSpec());
    first = small.NextOrder().value_or(v1::Assignment());
    EXPECT_EQ(first.job_id(), job.id()) << "no START on the small worker";
    big.SetGpu(80 * kGiB, 80 * kGiB);
    big.Connect();
  }

  TempDir dir;
  TestServer server;
  FakeWorker small, big;
  v1::Job job;
  v1::Assignment first;
};

TEST(FreeMemoryTest, ARefusedJobMovesToAWorkerWithTheRoomOnceAndFailsWhenNoneIsLeft) {
  SmallThenBig c(16 * kGiB);
  TestServer& server = c.server;
  const v1::Job& job = c.job;
  // 30 GiB at the peak: 33.9 GiB of GPU memory (the peak / 0.9 and the CUDA context), which
  // the big GPU has free.
  ASSERT_TRUE(c.small.Report({Refusal(c.first, "30.0"), ExitEvent(c.first, 2)}).ok());
  const auto second = c.big.NextOrder();
  ASSERT_TRUE(second.has_value()) << "the job did not move to the big worker";
  EXPECT_EQ(second->attempt(), c.first.attempt() + 1);
  const v1::Job moved = server.Get(job.id());
  EXPECT_EQ(moved.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(moved.restarts(), 0);  // the trainer did not fail: it was the wrong GPU
  EXPECT_TRUE(LogsSay(server, job.id(),
                      "was refused by worker host-small for GPU memory; its trainer's estimate "
                      "needs 33.9 GiB of GPU memory"));

  // The big one refuses it too (its free memory went elsewhere): the small one, which refused
  // it already, is not tried again, so the job fails with the trainer's message.
  ASSERT_TRUE(c.big.Report({Refusal(*second, "100.0"), ExitEvent(*second, 2)}).ok());
  ASSERT_TRUE(server.WaitForState(job.id(), v1::JOB_STATE_FAILED));
  const v1::Job failed = server.Get(job.id());
  EXPECT_THAT(failed.error(), HasSubstr("the memory estimate of this job is 100.0 GiB"));
  EXPECT_THAT(failed.error(),
              HasSubstr("no registered worker it was not refused on has 111.7 GiB of GPU memory"));
  EXPECT_FALSE(c.small.NextOrder(200ms).has_value());
}

TEST(FreeMemoryTest, HeartbeatsFreeMemoryIsShownAndDecidesWhetherARefusedJobMoves) {
  SmallThenBig c(-1);  // the small worker reports no free memory: an older worker
  TestServer& server = c.server;
  // Other processes took 60 GiB of the big GPU since it registered.
  ASSERT_TRUE(c.big.Heartbeat({}, 20 * kGiB));

  Coordinator& coordinator = server.server().coordinator();
  std::vector<WorkerView> workers = coordinator.Workers();
  ASSERT_EQ(workers.size(), 2u);
  const WorkerView& shown = workers[0].name == "host-big" ? workers[0] : workers[1];
  EXPECT_EQ(shown.devices.at(0).free_memory_bytes(), 20 * kGiB);
  const WorkerView& older = workers[0].name == "host-big" ? workers[1] : workers[0];
  EXPECT_FALSE(older.devices.at(0).has_free_memory_bytes());
  EXPECT_THAT(WorkerRowsHtml(workers), HasSubstr("20.00 GiB free of 80.00 GiB"));
  PrometheusSnapshot snapshot;
  snapshot.workers = workers;
  const std::string text = RenderPrometheus(snapshot);
  EXPECT_THAT(text, HasSubstr("qlorad_worker_device_free_memory_bytes{worker=\"host-big\","
                              "device=\"cuda:0\",device_name=\"test gpu\"} 21474836480\n"));
  EXPECT_THAT(text, Not(HasSubstr("free_memory_bytes{worker=\"host-small\"")));

  // 33.9 GiB needed, 20 GiB free on the only other GPU: the job fails at once.
  ASSERT_TRUE(c.small.Report({Refusal(c.first, "30.0"), ExitEvent(c.first, 2)}).ok());
  ASSERT_TRUE(server.WaitForState(c.job.id(), v1::JOB_STATE_FAILED));
  EXPECT_THAT(server.Get(c.job.id()).error(),
              HasSubstr("no registered worker it was not refused on has 33.9 GiB of GPU memory"));
  EXPECT_FALSE(c.big.NextOrder(200ms).has_value());
}

TEST(FreeMemoryTest, AFigureFromAWorkerGivenAJobIsIgnored) {
  TempDir dir;
  TestServer server(dir.File("qlorad.db"));
  FakeWorker gpu(server.channel(), "host-gpu");
  gpu.SetGpu(80 * kGiB, 70 * kGiB);
  gpu.Connect();
  const v1::Job job = server.Submit(GpuSpec());
  ASSERT_TRUE(gpu.NextOrder().has_value());
  // Its own trainer holds most of the GPU now: not what the next job would find.
  ASSERT_TRUE(gpu.Heartbeat({job.id()}, 2 * kGiB));
  const std::vector<WorkerView> workers = server.server().coordinator().Workers();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].devices.at(0).free_memory_bytes(), 70 * kGiB);
}

}  // namespace
}  // namespace qlorad::server::testing
