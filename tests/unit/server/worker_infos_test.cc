// WorkerInfos: ListWorkers' rows before the caller's view: states, the job a busy worker runs,
// and lost workers from the store.
#include "server/worker_infos.h"

#include <gtest/gtest.h>

namespace qlorad::server {
namespace {

WorkerView View(const std::string& name, std::vector<WorkerView::RunningRank> running) {
  WorkerView w;
  w.id = "id-" + name;
  w.name = name;
  w.hostname = "host";
  v1::DeviceInfo d;
  d.set_kind("cpu");
  w.devices = {d};
  w.running = std::move(running);
  w.heartbeat_age_ms = 250;
  return w;
}

WorkerRecord Record(const std::string& name, bool online) {
  WorkerRecord r;
  r.id = "old-" + name;
  r.name = name;
  r.hostname = "gone-host";
  r.online = online;
  return r;
}

TEST(WorkerInfosTest, RegisteredThenLostByName) {
  const auto infos =
      WorkerInfos({View("a", {}), View("b", {{"job-stale", -1, -1}, {"job-1", 2, 1}})},
                  {Record("z", false), Record("a", true), Record("b", true), Record("c", false)});
  ASSERT_EQ(infos.size(), 4u);
  EXPECT_EQ(infos[0].name(), "a");
  EXPECT_EQ(infos[0].state(), v1::WORKER_STATE_IDLE);
  EXPECT_EQ(infos[0].job_id(), "");
  EXPECT_EQ(infos[0].heartbeat_age_ms(), 250);
  ASSERT_EQ(infos[0].devices_size(), 1);
  // The rank it holds, not the stale trainer it is stopping.
  EXPECT_EQ(infos[1].state(), v1::WORKER_STATE_BUSY);
  EXPECT_EQ(infos[1].job_id(), "job-1");
  EXPECT_EQ(infos[1].rank(), 1);
  EXPECT_EQ(infos[1].attempt(), 2);
  // A registered name is not also listed as lost, whatever the store says.
  EXPECT_EQ(infos[2].name(), "c");
  EXPECT_EQ(infos[2].state(), v1::WORKER_STATE_LOST);
  EXPECT_EQ(infos[2].id(), "old-c");
  EXPECT_EQ(infos[2].hostname(), "gone-host");
  EXPECT_FALSE(infos[2].has_heartbeat_age_ms());
  EXPECT_EQ(infos[2].devices_size(), 0);
  EXPECT_EQ(infos[3].name(), "z");
}

TEST(WorkerInfosTest, AWorkerOnlyStoppingATrainerShowsIt) {
  const auto infos = WorkerInfos({View("a", {{"job-stale", -1, -1}})}, {});
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].state(), v1::WORKER_STATE_BUSY);
  EXPECT_EQ(infos[0].job_id(), "job-stale");
  EXPECT_EQ(infos[0].rank(), -1);
  EXPECT_EQ(infos[0].attempt(), 0);
}

}  // namespace
}  // namespace qlorad::server
