// The stream caps on their own: per client, in total, places given back by destroyed slots, and
// which part of a gRPC peer names the client.
#include "server/stream_limiter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

namespace qlorad::server {
namespace {

using ::testing::HasSubstr;

TEST(StreamLimiterTest, OneClientAtItsCapLeavesRoomForOthers) {
  StreamLimiter limiter({.max_total = 10, .max_per_client = 2});
  std::string why;
  auto a1 = limiter.TryAcquire("ipv4:10.0.0.1", &why);
  auto a2 = limiter.TryAcquire("ipv4:10.0.0.1", &why);
  ASSERT_TRUE(a1 && a2);
  EXPECT_FALSE(limiter.TryAcquire("ipv4:10.0.0.1", &why));
  EXPECT_THAT(why, HasSubstr("too many streams from ipv4:10.0.0.1: 2 are open"));
  EXPECT_THAT(why, HasSubstr("--max-streams-per-client"));
  EXPECT_TRUE(limiter.TryAcquire("ipv4:10.0.0.2", &why)) << "another client is not affected";
  EXPECT_EQ(limiter.open_for("ipv4:10.0.0.1"), 2);
}

TEST(StreamLimiterTest, TheTotalCapsEveryClientTogether) {
  StreamLimiter limiter({.max_total = 3, .max_per_client = 2});
  std::string why;
  std::vector<StreamLimiter::Slot> open;
  for (const char* client : {"a", "a", "b"}) {
    auto slot = limiter.TryAcquire(client, &why);
    ASSERT_TRUE(slot) << why;
    open.push_back(std::move(*slot));
  }
  EXPECT_FALSE(limiter.TryAcquire("c", &why));
  EXPECT_THAT(why, HasSubstr("the coordinator has 3 streams open"));
  EXPECT_THAT(why, HasSubstr("--max-streams"));
  EXPECT_EQ(limiter.open_total(), 3);
}

TEST(StreamLimiterTest, AnEndedStreamGivesItsPlaceBackOnce) {
  StreamLimiter limiter({.max_total = 1, .max_per_client = 1});
  std::string why;
  {
    auto slot = limiter.TryAcquire("a", &why);
    ASSERT_TRUE(slot);
    StreamLimiter::Slot moved = std::move(*slot);  // the moved-from slot must not release too
    EXPECT_FALSE(limiter.TryAcquire("b", &why));
  }
  EXPECT_EQ(limiter.open_total(), 0);
  EXPECT_EQ(limiter.open_for("a"), 0);
  EXPECT_TRUE(limiter.TryAcquire("b", &why));
}

TEST(StreamLimiterTest, ClientIsThePeerWithoutItsPort) {
  EXPECT_EQ(ClientOfPeer("ipv4:127.0.0.1:50123"), "ipv4:127.0.0.1");
  EXPECT_EQ(ClientOfPeer("ipv6:[::1]:50123"), "ipv6:[::1]");
  EXPECT_EQ(ClientOfPeer("ipv6:%5B::1%5D:50123"), "ipv6:%5B::1%5D");
  EXPECT_EQ(ClientOfPeer("ipv6:[::1]"), "ipv6:[::1]");
  EXPECT_EQ(ClientOfPeer("unix:/run/qlorad.sock"), "unix:/run/qlorad.sock");
}

}  // namespace
}  // namespace qlorad::server
