#include "worker/trainer/train/checkpointing_choice.h"

#include <gtest/gtest.h>

namespace qlorad::trainer {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

// 90% of the device is the line: the estimate already counts backward's transients, and the
// caching allocator's fragmentation takes some of what is left.
TEST(CheckpointingChoiceTest, OffWhenTheStepFitsInNinetyPercentOfTheDevice) {
  const CheckpointingDecision fits = DecideFromEstimate({kGiB / 2, 70 * kGiB, 80 * kGiB});
  EXPECT_FALSE(fits.on);
  EXPECT_EQ(fits.why,
            "auto: a step without it needs about 70.0 GiB of 80.0 GiB (0.5 GiB of activations "
            "per layer)");
  EXPECT_TRUE(DecideFromEstimate({kGiB, 73 * kGiB, 80 * kGiB}).on);
  EXPECT_TRUE(DecideFromEstimate({kGiB, 200 * kGiB, 80 * kGiB}).on);
}

}  // namespace
}  // namespace qlorad::trainer
