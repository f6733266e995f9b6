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
// what `planned` keeps already), with offload on a GPU, on the fused path (bf16/fp16/fp32 with the
// operator library), from kKeepMlpFromSeqLen tokens of context. It moves [tokens, 2 x intermediate]
// a layer over PCIe each way to skip one gate|up GEMM a layer in backward, which pays only where
// the layer's attention (quadratic in the context) gives the copies time: at Llama-3.1-8B 32K it
// took the step from 4.23 to 4.01 s (bench/results/2026-12-07-h100-9fca4e2-context_bench-*); at
// Llama-3.2-1B 4 x 2048 a layer's backward is shorter than its gate|up's copy. QLORAD_KEEP_MLP=0
// turns it off, =1 considers it at any context (for side-by-side timings).
inline constexpr int64_t kKeepMlpFromSeqLen = 32768;
KeepChoice PlanKeepMlp(const MemoryJob& planned, std::optional<int64_t> free_bytes,
                       std::optional<int64_t> host_available_bytes, at::Device device,
                       at::ScalarType dtype);

// How many of the last decoder layers keep their checkpointed tensors on the device when offload
// is on (ApplyActivationRecompute's resident_layers), from QLORAD_RESIDENT_LAYERS: 0 (the
// default, every layer offloaded) to `layers` (more means all); a value that is not a whole
// number within int64 means 0. A developer switch for side-by-side timings: at Llama-3.1-8B 32K
// with gate|up kept, a layer sends about 2.4 GB over PCIe in a forward of about 42 ms, so the
// copies out may end well after forward and backward's first copies back wait behind them. The
// memory estimate does not count the resident layers yet.
int64_t ResidentLayersFromEnvironment(int64_t layers);

}  // namespace qlorad::trainer
