#include "worker/trainer/train/checkpointing_choice.h"

#include <gtest/gtest.h>

#include "worker/trainer/model/tiny_model.h"
#include "worker/trainer/parallel/communicator.h"

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

// Offload's auto counts every layer's kept input and one recompute against the same 90%.
TEST(CheckpointingChoiceTest, OffloadWhenTheKeptInputsDoNotFit) {
  const CheckpointingDecision fits = DecideOffloadFromEstimate({kGiB, 60 * kGiB, 80 * kGiB});
  EXPECT_FALSE(fits.on);
  EXPECT_EQ(fits.why,
            "auto: with the layers' inputs on the device a step needs about 60.0 GiB of 80.0 GiB");
  EXPECT_TRUE(DecideOffloadFromEstimate({kGiB, 73 * kGiB, 80 * kGiB}).on);
}

// What needs no measurement: the explicit choices, auto without checkpointing, auto on a CPU.
TEST(CheckpointingChoiceTest, OffloadChoicesThatNeedNoMeasurement) {
  auto model = BuildLlamaModel(
      TinyLlamaConfig(),
      [](const std::string&, const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
        return at::zeros(shape);
      },
      at::kCPU, at::kFloat);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto comm = parallel::MakeLocalCommunicator(at::kCPU);
  const auto decide = [&](CheckpointingChoice choice, bool checkpointing_on) {
    return DecideOffload(choice, checkpointing_on, *model, 1, 8, *comm);
  };
  EXPECT_TRUE(decide(CheckpointingChoice::kOn, true).on);
  EXPECT_FALSE(decide(CheckpointingChoice::kOff, true).on);
  const CheckpointingDecision without = decide(CheckpointingChoice::kAuto, false);
  EXPECT_FALSE(without.on);
  EXPECT_EQ(without.why, "auto: checkpointing is off");
  const CheckpointingDecision cpu = decide(CheckpointingChoice::kAuto, true);
  EXPECT_FALSE(cpu.on);
  EXPECT_EQ(cpu.why, "auto: on a CPU");
}

}  // namespace
}  // namespace qlorad::trainer
