#include "client/cli/quiet_cutoff.h"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>

#include "tests/unit/manual_clock.h"

namespace qlorad::cli {
namespace {

using qlorad::testing::ManualClock;
using std::chrono::milliseconds;

TEST(QuietCutoff, FiresOnceQuietForTheWholePeriod) {
  ManualClock clock;
  grpc::ClientContext context;
  QuietCutoff cutoff(context, milliseconds(400), clock.AsFunction());
  clock.Advance(milliseconds(300));
  cutoff.Check();
  EXPECT_FALSE(cutoff.fired()) << "fired before the period ran out";
  clock.Advance(milliseconds(100));
  cutoff.Check();
  EXPECT_TRUE(cutoff.fired());
}

TEST(QuietCutoff, TouchesKeepItFromFiring) {
  ManualClock clock;
  grpc::ClientContext context;
  QuietCutoff cutoff(context, milliseconds(400), clock.AsFunction());
  for (int i = 0; i < 40; ++i) {  // 12 s of traffic, one message every 300 ms
    clock.Advance(milliseconds(300));
    cutoff.Check();
    ASSERT_FALSE(cutoff.fired()) << "fired " << (i + 1) * 300 << " ms in, 300 ms after a message";
    cutoff.Touch();
  }
  clock.Advance(milliseconds(300));
  cutoff.Check();
  EXPECT_FALSE(cutoff.fired());
  clock.Advance(milliseconds(100));
  cutoff.Check();
  EXPECT_TRUE(cutoff.fired());
}

// Polls `done` until it holds or 30 s pass (a bound for a hang only); returns whether it held.
bool WaitUntil(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  return done();
}

// The cutoff's thread fires on its own, on the real clock.
TEST(QuietCutoff, FiresWithoutBeingAsked) {
  grpc::ClientContext context;
  QuietCutoff cutoff(context, milliseconds(100));
  EXPECT_TRUE(WaitUntil([&] { return cutoff.fired(); }));
}

TEST(QuietCutoff, DestroyedWhileWaitingReturnsAtOnce) {
  ManualClock clock;
  const auto test_thread = std::this_thread::get_id();
  std::atomic<bool> read_by_its_thread = false;
  auto now = [&] {
    if (std::this_thread::get_id() != test_thread) read_by_its_thread = true;
    return clock.Now();
  };
  grpc::ClientContext context;
  std::chrono::steady_clock::time_point start;
  {
    QuietCutoff cutoff(context, milliseconds(120'000), now);
    // Its thread reads the clock with the lock held and then waits for the rest of the period,
    // so once it has read the clock the destructor below meets it waiting.
    ASSERT_TRUE(WaitUntil([&] { return read_by_its_thread.load(); }));
    start = std::chrono::steady_clock::now();
  }
  // The destructor wakes the thread instead of waiting out the two minutes; the bound only tells
  // "at once" from "after the period".
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(30'000));
}

}  // namespace
}  // namespace qlorad::cli
