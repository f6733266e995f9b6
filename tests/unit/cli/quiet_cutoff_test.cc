#include "client/cli/quiet_cutoff.h"

#include <gtest/gtest.h>

#include <thread>

namespace qlorad::cli {
namespace {

using std::chrono::milliseconds;

TEST(QuietCutoff, FiresOnceQuiet) {
  grpc::ClientContext context;
  QuietCutoff cutoff(context, milliseconds(100));
  std::this_thread::sleep_for(milliseconds(1000));
  EXPECT_TRUE(cutoff.fired());
}

TEST(QuietCutoff, TouchesKeepItFromFiring) {
  grpc::ClientContext context;
  QuietCutoff cutoff(context, milliseconds(400));
  for (int i = 0; i < 40; ++i) {  // 1 s of traffic, one message every 25 ms
    cutoff.Touch();
    std::this_thread::sleep_for(milliseconds(25));
  }
  EXPECT_FALSE(cutoff.fired());
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_TRUE(cutoff.fired());
}

TEST(QuietCutoff, DestroyedBeforeTheDeadlineDoesNotFire) {
  grpc::ClientContext context;
  const auto start = std::chrono::steady_clock::now();
  { QuietCutoff cutoff(context, milliseconds(60'000)); }
  // The destructor wakes the thread at once instead of waiting out the quiet period.
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(5'000));
}

}  // namespace
}  // namespace qlorad::cli
