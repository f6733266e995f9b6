#include "worker/trainer/train/checkpointing_choice.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

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

// Keeping attention's outputs: never on a CPU (its attention recomputes) nor in fp32 (PyTorch's
// SDPA), and the environment's QLORAD_KEEP_ATTENTION=0 turns it off for side-by-side timings
// (ResolveKeepAttention's rules against a GPU: memory_estimate_test.cc).
TEST(CheckpointingChoiceTest, KeptAttentionIsOffOnACpuInFp32AndByTheEnvironment) {
  MemoryJob job = MemoryJobOfRun(JobSpec{}, TinyLlamaConfig(), 1, parallel::Strategy::kSingle);
  job.checkpointing = job.offload = true;
  const int64_t plenty = int64_t{1} << 40;
  const at::Device cuda(at::kCUDA, 0);
  KeepChoice keep = PlanKeepAttention(job, plenty, plenty, at::kCPU, at::kBFloat16);
  EXPECT_FALSE(keep.on);
  EXPECT_EQ(keep.why, "on a CPU");
  keep = PlanKeepAttention(job, plenty, plenty, cuda, at::kFloat);
  EXPECT_FALSE(keep.on);
  EXPECT_EQ(keep.why, "attention runs PyTorch's SDPA in Float, which keeps nothing");
  keep = PlanKeepAttention(job, plenty, plenty, cuda, at::kBFloat16);
  EXPECT_TRUE(keep.on) << keep.why;
  setenv("QLORAD_KEEP_ATTENTION", "0", 1);
  keep = PlanKeepAttention(job, plenty, plenty, cuda, at::kBFloat16);
  unsetenv("QLORAD_KEEP_ATTENTION");
  EXPECT_FALSE(keep.on);
  EXPECT_EQ(keep.why, "QLORAD_KEEP_ATTENTION=0");
  job.offload = false;
  EXPECT_EQ(PlanKeepAttention(job, plenty, plenty, cuda, at::kBFloat16).why,
            "activation offload is off");
}

// The MLP's gate|up: from 32K tokens of context by ResolveKeepMlp's rules, at any context when
// QLORAD_KEEP_MLP=1 asks, never with QLORAD_KEEP_MLP=0 or on a CPU.
TEST(CheckpointingChoiceTest, KeptGateUpNeedsALongContext) {
  MemoryJob job = MemoryJobOfRun(JobSpec{}, TinyLlamaConfig(), 1, parallel::Strategy::kSingle);
  job.checkpointing = job.offload = true;
  const int64_t plenty = int64_t{1} << 40;
  const at::Device cuda(at::kCUDA, 0);
  unsetenv("QLORAD_KEEP_MLP");
  job.seq_len = kKeepMlpFromSeqLen - 1024;
  KeepChoice keep = PlanKeepMlp(job, plenty, plenty, cuda, at::kBFloat16);
  EXPECT_FALSE(keep.on);
  EXPECT_EQ(keep.why,
            "data.max_seq_len 31744 is under 32768: a layer's attention is too short to hide its "
            "gate|up's trips over PCIe");
  job.seq_len = kKeepMlpFromSeqLen;
  keep = PlanKeepMlp(job, plenty, plenty, cuda, at::kBFloat16);
  EXPECT_TRUE(keep.on) << keep.why;
  const KeepChoice cpu = PlanKeepMlp(job, plenty, plenty, at::kCPU, at::kBFloat16);
  EXPECT_FALSE(cpu.on);
  EXPECT_EQ(cpu.why, "on a CPU");

  setenv("QLORAD_KEEP_MLP", "0", 1);
  keep = PlanKeepMlp(job, plenty, plenty, cuda, at::kBFloat16);
  EXPECT_FALSE(keep.on);
  EXPECT_EQ(keep.why, "QLORAD_KEEP_MLP=0");
  setenv("QLORAD_KEEP_MLP", "1", 1);
  job.seq_len = 2048;
  keep = PlanKeepMlp(job, plenty, plenty, cuda, at::kBFloat16);
  unsetenv("QLORAD_KEEP_MLP");
  EXPECT_TRUE(keep.on) << keep.why;
}

TEST(CheckpointingChoiceTest, ResidentLayersComeFromTheEnvironmentWithinTheModel) {
  unsetenv("QLORAD_RESIDENT_LAYERS");
  EXPECT_EQ(ResidentLayersFromEnvironment(32), 0);
  for (const auto& [value, expected] :
       std::vector<std::pair<std::string, int64_t>>{{"4", 4},
                                                    {"32", 32},
                                                    {"99", 32},
                                                    {"0", 0},
                                                    {"-1", 0},
                                                    {"x", 0},
                                                    {"4x", 0},
                                                    {"", 0},
                                                    {"99999999999", 32},
                                                    {"99999999999999999999", 0}}) {
    setenv("QLORAD_RESIDENT_LAYERS", value.c_str(), 1);
    EXPECT_EQ(ResidentLayersFromEnvironment(32), expected) << "'" << value << "'";
  }
  unsetenv("QLORAD_RESIDENT_LAYERS");
}

}  // namespace
}  // namespace qlorad::trainer
