// train.activation_checkpointing: auto. Decided from a measurement rather than a formula of the
// architecture: one decoder layer's forward on a batch of the job's shape, with the graph kept
// for backward, shows what one layer holds; the step without recompute holds about the layer
// count times that, on top of what is allocated now (model, adapters), plus the loss's chunk and
// backward's transients. Off when that fits in the device's memory, on otherwise.
#pragma once

#include <cstdint>
#include <string>

#include "common/spec_choices.h"
#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/parallel/communicator.h"

namespace qlorad::trainer {

struct CheckpointingDecision {
  bool on = false;
  std::string why;  // for the job's log: "activation checkpointing: off (auto: ...)"
};

// What the probe measured, and what the decision compares.
struct ActivationEstimate {
  int64_t per_layer_bytes = 0;
  int64_t step_bytes = 0;    // allocated now + layers x per layer + headroom
  int64_t device_bytes = 0;  // the device's total memory
};

struct ActivationPlan {
  CheckpointingDecision checkpointing;  // train.activation_checkpointing
  CheckpointingDecision offload;        // train.activation_offload (parallel/activation_offload.h)
};

// Both decisions on rows x seq micro-batches, the layer measured at most once (it leaves the
// model without a layer runner: the caller applies recompute after). Checkpointing's auto: on
// when a step without it does not fit (DecideFromEstimate). Offload: true also turns
// checkpointing on; auto is on when checkpointing is on and a step with every layer's kept input
// on the device (allocated now + layers x one input + twice one layer's activations for the
// recompute) does not fit (DecideOffloadFromEstimate). On a CPU both autos mean off (host memory
// is not the scarce kind). Every rank of `comm` gets rank 0's auto decisions: recompute changes
// the order of collectives under fsdp, so ranks must agree.
ActivationPlan PlanActivations(CheckpointingChoice checkpointing, CheckpointingChoice offload,
                               LlamaModel& model, int64_t rows, int64_t seq,
                               parallel::Communicator& comm);

// The rules, apart from the measurement: on when the estimate does not fit in 90% of the device.
CheckpointingDecision DecideFromEstimate(const ActivationEstimate& estimate);
CheckpointingDecision DecideOffloadFromEstimate(const ActivationEstimate& estimate);

}  // namespace qlorad::trainer
