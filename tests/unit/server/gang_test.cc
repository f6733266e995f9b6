// Multi-rank jobs through gRPC: all ranks start together with one rendezvous, the job ends when
// every rank has exited, and one rank's crash cancels the others and retries the whole gang.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

class GangTest : public ::testing::Test {
 protected:
  GangTest() {
    for (int i = 0; i < 3; ++i) {
      workers_.push_back(
          std::make_unique<FakeWorker>(server_.channel(), "gpu" + std::to_string(i)));
      workers_.back()->Connect();
    }
  }

  // The START orders of a 2-rank job, indexed by rank, and the workers that got them.
  void StartGang(const v1::Job& job, std::vector<v1::Assignment>& orders,
                 std::vector<FakeWorker*>& ranks) {
    orders.assign(2, {});
    ranks.assign(2, nullptr);
    for (auto& w : workers_) {
      auto order = w->NextOrder(500ms);
      if (!order.has_value()) continue;
      ASSERT_EQ(order->job_id(), job.id());
      ASSERT_EQ(order->world_size(), 2);
      orders[order->rank()] = *order;
      ranks[order->rank()] = w.get();
    }
    ASSERT_NE(ranks[0], nullptr);
    ASSERT_NE(ranks[1], nullptr);
  }

  TempDir dir_;
  TestServer server_{dir_.File("qlorad.db")};
  std::vector<std::unique_ptr<FakeWorker>> workers_;
};

// The port a worker registered with is where its rank 0's store listens: free on that host, which
// a port the coordinator finds free on its own host need not be.
TEST(GangRendezvousTest, RanksMeetOnThePortRank0sWorkerHolds) {
  TempDir dir;
  TestServer server{dir.File("qlorad.db")};
  std::vector<std::unique_ptr<FakeWorker>> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(std::make_unique<FakeWorker>(server.channel(), "cpu" + std::to_string(i)));
    workers.back()->set_rendezvous_port(41000 + i);
    workers.back()->Connect();
  }
  server.Submit(SpecYaml({.gpus = 2}));
  std::vector<v1::Assignment> orders(2);
  for (int i = 0; i < 2; ++i) {
    auto order = workers[i]->NextOrder();
    ASSERT_TRUE(order.has_value()) << "worker " << i << " got no START";
    orders[order->rank()] = *order;
    if (order->rank() == 0) {
      EXPECT_EQ(order->rendezvous(), "127.0.0.1:" + std::to_string(41000 + i));
    }
  }
  EXPECT_EQ(orders[0].rendezvous(), orders[1].rendezvous());
}

TEST_F(GangTest, RanksStartTogetherAndTheJobCompletesWhenAllExit) {
  const v1::Job job = server_.Submit(SpecYaml({.gpus = 2}));
  std::vector<v1::Assignment> orders;
  std::vector<FakeWorker*> ranks;
  StartGang(job, orders, ranks);
  EXPECT_EQ(orders[0].rendezvous(), orders[1].rendezvous());
  EXPECT_THAT(orders[0].rendezvous(), ::testing::MatchesRegex("127\\.0\\.0\\.1:[0-9]+"));
  EXPECT_EQ(server_.Get(job.id()).worker_id(), ranks[0]->worker_id());

  // Only rank 0's metrics move the job's progress.
  ASSERT_TRUE(ranks[1]->Report({MetricsEvent(orders[1], 1, 9.0)}).ok());
  ASSERT_TRUE(ranks[0]->Report({MetricsEvent(orders[0], 1, 2.0)}).ok());
  EXPECT_DOUBLE_EQ(server_.Get(job.id()).last_loss(), 2.0);

  ASSERT_TRUE(ranks[0]->Report({DoneEvent(orders[0], "/a"), ExitEvent(orders[0], 0)}).ok());
  EXPECT_EQ(server_.Get(job.id()).state(), v1::JOB_STATE_RUNNING) << "rank 1 still runs";
  ASSERT_TRUE(ranks[1]->Report({ExitEvent(orders[1], 0)}).ok());
  EXPECT_EQ(server_.Get(job.id()).state(), v1::JOB_STATE_COMPLETED);
}

TEST_F(GangTest, OneRankCrashingCancelsTheOthersAndRetriesTheGang) {
  const v1::Job job = server_.Submit(SpecYaml({.gpus = 2}));
  std::vector<v1::Assignment> orders;
  std::vector<FakeWorker*> ranks;
  StartGang(job, orders, ranks);

  ASSERT_TRUE(ranks[1]->Report({ExitEvent(orders[1], 1, 0, "NCCL error")}).ok());
  auto cancel = ranks[0]->NextOrder();
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->kind(), v1::Assignment::KIND_CANCEL);
  EXPECT_EQ(cancel->attempt(), 0);
  EXPECT_EQ(server_.Get(job.id()).attempt(), 1);

  // The retry starts at once on the two free workers; rank 0's worker stays out of it, busy
  // until its old trainer reports the exit.
  ASSERT_TRUE(server_.WaitForState(job.id(), v1::JOB_STATE_RUNNING));
  int restarted = 0;
  for (auto& w : workers_) {
    while (auto order = w->NextOrder(200ms)) {
      if (order->kind() != v1::Assignment::KIND_START) continue;
      EXPECT_NE(w.get(), ranks[0]);
      EXPECT_EQ(order->attempt(), 1);
      ++restarted;
    }
  }
  EXPECT_EQ(restarted, 2);
  // The old attempt's exit only frees the worker; the new attempt keeps running.
  ASSERT_TRUE(ranks[0]->Report({ExitEvent(orders[0], -1, 15, "", /*cancelled=*/true)}).ok());
  const v1::Job now = server_.Get(job.id());
  EXPECT_EQ(now.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(now.attempt(), 1);
}

}  // namespace
}  // namespace qlorad::server::testing
