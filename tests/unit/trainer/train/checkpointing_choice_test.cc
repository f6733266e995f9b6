#include "worker/trainer/train/checkpointing_choice.h"

#include <gtest/gtest.h>

#include "worker/trainer/model/tiny_model.h"
#include "worker/trainer/parallel/communicator.h"
#include "worker/trainer/train/memory_check.h"

namespace qlorad::trainer {
namespace {

// The explicit choices, offload true turning checkpointing on, the autos without checkpointing
// and on a CPU (the autos against a GPU's free memory: memory_estimate_test.cc).
TEST(CheckpointingChoiceTest, ExplicitChoicesAndTheCpusAutos) {
  auto comm = parallel::MakeLocalCommunicator(at::kCPU);
  using C = CheckpointingChoice;
  const auto plan = [&](C checkpointing, C offload) {
    JobSpec spec;
    spec.train.activation_checkpointing = checkpointing;
    spec.train.activation_offload = offload;
    const MemoryJob job = MemoryJobOfRun(spec, TinyLlamaConfig(), 1, parallel::Strategy::kSingle);
    // A CPU has no free GPU memory to decide by, even when told a figure.
    return PlanActivations(spec, job, int64_t{1} << 40, at::kCPU, *comm);
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
