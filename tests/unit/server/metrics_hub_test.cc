// The hub's contract: publishing never waits; a full queue turns into an `overflowed` flag;
// finish and close reach every subscriber of the job; unsubscribing happens on destruction.
#include "server/metrics_hub.h"

#include <gtest/gtest.h>

namespace qlorad::server {
namespace {

using namespace std::chrono_literals;
using IntHub = Hub<int>;

TEST(HubTest, DeliversInOrderToEverySubscriberOfTheJob) {
  IntHub hub(8);
  auto a = hub.Subscribe("job-a");
  auto a2 = hub.Subscribe("job-a");
  auto b = hub.Subscribe("job-b");
  hub.Publish("job-a", 1, 10);
  hub.Publish("job-a", 2, 20);
  for (auto* sub : {a.get(), a2.get()}) {
    auto batch = sub->Wait(100ms);
    ASSERT_EQ(batch.items.size(), 2u);
    EXPECT_EQ(batch.items[0].cursor, 1);
    EXPECT_EQ(batch.items[1].value, 20);
    EXPECT_FALSE(batch.overflowed);
  }
  EXPECT_TRUE(b->Wait(10ms).items.empty());
}

TEST(HubTest, FullQueueOverflowsInsteadOfBlocking) {
  IntHub hub(3);
  auto sub = hub.Subscribe("job");
  for (int i = 1; i <= 10; ++i) hub.Publish("job", i, i);
  auto batch = sub->Wait(10ms);
  EXPECT_TRUE(batch.overflowed);
  EXPECT_TRUE(batch.items.empty()) << "the reader re-reads the store instead";
  hub.Publish("job", 11, 11);
  auto next = sub->Wait(10ms);
  EXPECT_FALSE(next.overflowed) << "the flag is taken once";
  ASSERT_EQ(next.items.size(), 1u);
  EXPECT_EQ(next.items[0].value, 11);
}

TEST(HubTest, FinishAndCloseWakeSubscribers) {
  IntHub hub(3);
  auto sub = hub.Subscribe("job");
  hub.Finish("job");
  EXPECT_TRUE(sub->Wait(1s).finished);
  auto other = hub.Subscribe("other");
  hub.Close();
  EXPECT_TRUE(other->Wait(1s).closed);
  EXPECT_TRUE(hub.Subscribe("late")->Wait(0ms).closed);
}

TEST(HubTest, DestroyingASubscriptionUnsubscribes) {
  IntHub hub(3);
  {
    auto sub = hub.Subscribe("job");
    EXPECT_EQ(hub.subscriber_count(), 1u);
  }
  EXPECT_EQ(hub.subscriber_count(), 0u);
  hub.Publish("job", 1, 1);  // nobody listening: a no-op
}

}  // namespace
}  // namespace qlorad::server
