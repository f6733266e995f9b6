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

// What needs no measurement: the explicit choices, offload true turning checkpointing on, the autos
// without checkpointing and on a CPU.
TEST(CheckpointingChoiceTest, PlansThatNeedNoMeasurement) {
  auto model = BuildLlamaModel(
      TinyLlamaConfig(),
      [](const std::string&, const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
        return at::zeros(shape);
      },
      at::kCPU, at::kFloat);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto comm = parallel::MakeLocalCommunicator(at::kCPU);
  using C = CheckpointingChoice;
  const auto plan = [&](C checkpointing, C offload) {
    return PlanActivations(checkpointing, offload, *model, 1, 8, *comm);
  };
  ActivationPlan p = plan(C::kOn, C::kOn);
  EXPECT_TRUE(p.checkpointing.on && p.offload.on);
  EXPECT_EQ(p.offload.why, "train.activation_offload");
  p = plan(C::kOn, C::kOff);
  EXPECT_TRUE(p.checkpointing.on);
  EXPECT_FALSE(p.offload.on);
  p = plan(C::kOff, C::kAuto);
  EXPECT_FALSE(p.checkpointing.on || p.offload.on);
  EXPECT_EQ(p.checkpointing.why, "train.activation_checkpointing");
  EXPECT_EQ(p.offload.why, "auto: checkpointing is off");
  p = plan(C::kOn, C::kAuto);
  EXPECT_TRUE(p.checkpointing.on);
  EXPECT_FALSE(p.offload.on);
  EXPECT_EQ(p.offload.why, "auto: on a CPU");
  p = plan(C::kAuto, C::kAuto);
  EXPECT_FALSE(p.checkpointing.on || p.offload.on);
  EXPECT_EQ(p.checkpointing.why, "auto: on a CPU");
  p = plan(C::kAuto, C::kOn);  // auto would say off on a CPU: offload's true turns it on
  EXPECT_TRUE(p.checkpointing.on && p.offload.on);
  EXPECT_EQ(p.checkpointing.why, "train.activation_offload: true offloads what it keeps");
}

}  // namespace
}  // namespace qlorad::trainer
