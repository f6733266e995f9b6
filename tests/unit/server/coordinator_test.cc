// Coordinator rules that need no network: here, how the outbox behaves when a stream breaks
// between writing an order and removing it.
#include "server/coordinator.h"

#include <gtest/gtest.h>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

TEST(CoordinatorTest, AnUnconfirmedStartIsNotRepeatedOnceItsAttemptEnded) {
  TempDir dir;
  CoordinatorOptions options;
  options.db_path = dir.File("qlorad.db");
  auto coordinator = Coordinator::Create(options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status().ToString();
  Coordinator& c = **coordinator;
  v1::RegisterRequest registration;
  registration.set_name("host-gpu0");
  auto registered = c.RegisterWorker(registration);
  ASSERT_TRUE(registered.ok());
  const std::string worker_id = registered->worker_id();
  auto generation = c.AttachOrders(worker_id);
  ASSERT_TRUE(generation.ok());
  auto job = c.SubmitJob(SpecYaml(), "alice");
  ASSERT_TRUE(job.ok());

  // The START went out but the stream broke before PopOrder: it stays in the outbox...
  auto first = c.PeekOrder(worker_id, *generation, 1s);
  ASSERT_TRUE(first.ok() && first->has_value());
  ASSERT_EQ((*first)->attempt(), 0);
  c.DetachOrders(worker_id, *generation);
  // ...and the worker, which did get it, reports that attempt's crash.
  v1::ReportEventsRequest report;
  report.set_worker_id(worker_id);
  *report.add_events() = ExitEvent(**first, 1);
  ASSERT_TRUE(c.ReportEvents(report).ok());

  // The next stream gets the retry, never the old START again.
  auto next_generation = c.AttachOrders(worker_id);
  ASSERT_TRUE(next_generation.ok());
  auto next = c.PeekOrder(worker_id, *next_generation, 1s);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->kind(), v1::Assignment::KIND_START);
  EXPECT_EQ((*next)->attempt(), 1);
  c.PopOrder(worker_id, *next_generation);
  auto nothing = c.PeekOrder(worker_id, *next_generation, 50ms);
  ASSERT_TRUE(nothing.ok());
  EXPECT_FALSE(nothing->has_value());
}

}  // namespace
}  // namespace qlorad::server::testing
