#include "worker/trainer/runtime/watchdog.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>

#include "worker/trainer/runtime/exit_codes.h"

namespace qlorad::trainer {
namespace {

void ReportToStderr(const std::string& line) {
  std::cerr << line << std::endl;
}

// The process dies in these, and other threads exist: each death test re-runs the binary.
class WatchdogDeathTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(WatchdogDeathTest, NoBeatWithinTheTimeoutEndsTheProcessNamingWhatItWasDoing) {
  EXPECT_EXIT(
      {
        Watchdog watchdog(1, 0.2, ReportToStderr);
        watchdog.Beat("running step 4 of 10", 3);
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(kExitHung),
      "watchdog: rank 1 made no progress for 0.2 s \\(parallel.timeout_s\\) while running step 4 "
      "of 10 \\(last completed step 3\\)");
}

TEST_F(WatchdogDeathTest, AReportThatNeverReturnsDoesNotKeepTheProcessAlive) {
  EXPECT_EXIT(
      {
        Watchdog watchdog(0, 0.1, [](const std::string&) {
          std::this_thread::sleep_for(std::chrono::hours(1));  // a blocked output stream
        });
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(kExitHung), "");
}

// A watchdog that ignored beats would fire during the loop, and one that outlived its destructor
// would fire during the sleep: either way the child exits with kExitHung, not 0. The timeout
// leaves 1.5 s between beats 50 ms apart, so a loaded machine cannot fire it by mistake.
TEST_F(WatchdogDeathTest, RegularBeatsKeepItQuietAndDestructionStopsIt) {
  EXPECT_EXIT(
      {
        {
          Watchdog watchdog(0, 1.5, ReportToStderr);
          const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
          for (int64_t step = 0; std::chrono::steady_clock::now() < until; ++step) {
            watchdog.Beat("running step " + std::to_string(step + 1), step);
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
        }
        std::this_thread::sleep_for(std::chrono::seconds(2));
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace qlorad::trainer
