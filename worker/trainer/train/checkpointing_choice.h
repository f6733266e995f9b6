// train.activation_checkpointing and train.activation_offload: auto decided by the memory
// estimate (common/memory_estimate.h), the one the trainer refuses a job by and the coordinator
// places it by, against what the device had free before the model was loaded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/jobspec.h"
#include "common/memory_estimate.h"
#include "worker/trainer/parallel/communicator.h"

namespace qlorad::trainer {

struct CheckpointingDecision {
  bool on = false;
  std::string why;  // for the job's log: "activation checkpointing: off (auto: ...)"
};

struct ActivationPlan {
  CheckpointingDecision checkpointing;  // train.activation_checkpointing
  CheckpointingDecision offload;        // train.activation_offload (parallel/activation_offload.h)
};

// Both decisions for `job` (MemoryJobOf the spec, at this run's world size), by
// ResolveActivations: checkpointing auto is off when the step fits in 90% of `free_bytes`
// without it; offload auto is on when checkpointing is on and the step does not fit with every
// layer's kept input on the device; true offload turns checkpointing on. free_bytes nullopt (a
// CPU): both autos mean off (host memory is not the scarce kind). Every rank of `comm` gets rank
// 0's auto decisions: recompute changes the order of collectives under fsdp, so ranks must agree.
ActivationPlan PlanActivations(const JobSpec& spec, const MemoryJob& job,
                               std::optional<int64_t> free_bytes, at::Device device,
                               parallel::Communicator& comm);

// Whether a job with checkpointing and offload planned (`planned`) keeps each layer's attention
// output and log-sum-exp for its recompute: ResolveKeepAttention against the device's free and the
// host's available memory, where attention runs the flash kernels that keep them (activations of
// `dtype` on `device`; not on a CPU, nor in fp32). QLORAD_KEEP_ATTENTION=0 in the environment
// turns it off (for side-by-side timings). Ranks may differ: it changes no collective.
KeepChoice PlanKeepAttention(const MemoryJob& planned, std::optional<int64_t> free_bytes,
                             std::optional<int64_t> host_available_bytes, at::Device device,
                             at::ScalarType dtype);

// Whether each layer's MLP also keeps its gate|up output for its backward (ResolveKeepMlp, beside
// what `planned` keeps already): for now only when QLORAD_KEEP_MLP=1 asks for it (it moves
// [tokens, 2 x intermediate] a layer over PCIe each way and is not yet measured on a GPU), with
// offload on a GPU, on the fused path (bf16/fp16/fp32 with the operator library).
KeepChoice PlanKeepMlp(const MemoryJob& planned, std::optional<int64_t> free_bytes,
                       std::optional<int64_t> host_available_bytes, at::Device device,
                       at::ScalarType dtype);

}  // namespace qlorad::trainer
