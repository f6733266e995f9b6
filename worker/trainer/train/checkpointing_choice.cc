#include "worker/trainer/train/checkpointing_choice.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <string>
#include <string_view>
#include <tuple>

#include "worker/trainer/model/attention.h"
#include "worker/trainer/model/fused_layers.h"

namespace qlorad::trainer {

namespace {

// Every rank takes rank 0's auto decisions: recompute and offload change what each rank's
// backward does (and, under fsdp, the order of its collectives), and each rank's device may have
// had a little more or less free. Explicit choices come from the one spec every rank reads, so
// only auto ones travel (and every rank knows which those are).
void AgreeWithRankZero(ActivationPlan& plan, bool checkpointing_auto, bool offload_auto,
                       at::Device device, parallel::Communicator& comm) {
  if (comm.world_size() <= 1 || !(checkpointing_auto || offload_auto)) return;
  at::Tensor on = at::tensor({plan.checkpointing.on ? 1 : 0, plan.offload.on ? 1 : 0},
                             at::TensorOptions(at::kInt))
                      .to(device);
  auto work = comm.Broadcast(on, 0);
  const Status status = work->Wait();
  TORCH_CHECK(status.ok(), "activation checkpointing decision: ", status.ToString());
  if (comm.rank() == 0) return;
  const at::Tensor agreed = on.cpu();
  for (auto [decision, is_auto, i] : {std::tuple{&plan.checkpointing, checkpointing_auto, 0},
                                      std::tuple{&plan.offload, offload_auto, 1}}) {
    if (!is_auto) continue;
    decision->on = agreed[i].item<int>() != 0;
    decision->why = "auto: rank 0's decision";
  }
}

}  // namespace

ActivationPlan PlanActivations(const JobSpec& spec, const MemoryJob& job,
                               std::optional<int64_t> free_bytes, at::Device device,
                               parallel::Communicator& comm) {
  if (!device.is_cuda()) free_bytes.reset();
  const ActivationChoices choices = ResolveActivations(spec, job, free_bytes);
  ActivationPlan plan{{choices.checkpointing, choices.checkpointing_why},
                      {choices.offload, choices.offload_why}};
  // A forced checkpointing (offload: true) or a CPU's auto is the same on every rank too.
  AgreeWithRankZero(
      plan, spec.train.activation_checkpointing == CheckpointingChoice::kAuto && device.is_cuda(),
      spec.train.activation_offload == CheckpointingChoice::kAuto && device.is_cuda(), device,
      comm);
  return plan;
}

KeepChoice PlanKeepAttention(const MemoryJob& planned, std::optional<int64_t> free_bytes,
                             std::optional<int64_t> host_available_bytes, at::Device device,
                             at::ScalarType dtype) {
  if (!planned.checkpointing || !planned.offload || !device.is_cuda()) {
    free_bytes.reset();  // ResolveKeepAttention says why it is off
  } else if (!UsesFlashAttention(device, dtype, planned.model.head_dim)) {
    return {false, "attention runs PyTorch's SDPA in " + std::string(c10::toString(dtype)) +
                       ", which keeps nothing"};
  } else if (const char* env = std::getenv("QLORAD_KEEP_ATTENTION");
             env != nullptr && std::string(env) == "0") {
    return {false, "QLORAD_KEEP_ATTENTION=0"};
  }
  return ResolveKeepAttention(planned, free_bytes, host_available_bytes);
}

KeepChoice PlanKeepMlp(const MemoryJob& planned, std::optional<int64_t> free_bytes,
                       std::optional<int64_t> host_available_bytes, at::Device device,
                       at::ScalarType dtype) {
  const char* env = std::getenv("QLORAD_KEEP_MLP");
  const std::string asked = env != nullptr ? env : "";
  if (asked == "0") return {false, "QLORAD_KEEP_MLP=0"};
  if (asked != "1" && planned.seq_len < kKeepMlpFromSeqLen) {
    return {false, "data.max_seq_len " + std::to_string(planned.seq_len) + " is under " +
                       std::to_string(kKeepMlpFromSeqLen) +
                       ": a layer's attention is too short to hide its gate|up's trips over PCIe"};
  }
  if (!planned.checkpointing || !planned.offload || !device.is_cuda()) {
    free_bytes.reset();  // ResolveKeepMlp says why it is off
  } else if (!FusedLayersAvailable(device, dtype)) {
    return {false, "the MLP runs module by module here, which keeps nothing"};
  }
  return ResolveKeepMlp(planned, free_bytes, host_available_bytes);
}

int64_t ResidentLayersFromEnvironment(int64_t layers) {
  const char* env = std::getenv("QLORAD_RESIDENT_LAYERS");
  if (env == nullptr) return 0;
  const std::string_view value(env);
  int64_t resident = 0;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), resident);
  if (error != std::errc() || end != value.data() + value.size() || resident < 0) return 0;
  return std::min<int64_t>(resident, std::max<int64_t>(layers, 0));
}

}  // namespace qlorad::trainer
