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

// The decision on rows x seq micro-batches. On a CPU, auto means off (host memory is not the
// scarce kind). Every rank of `comm` gets rank 0's decision: recompute changes the order of
// collectives under fsdp, so ranks must agree.
CheckpointingDecision DecideCheckpointing(CheckpointingChoice choice, LlamaModel& model,
                                          int64_t rows, int64_t seq, parallel::Communicator& comm);

// The rule, apart from the measurement: on when the estimate does not fit in 90% of the device.
CheckpointingDecision DecideFromEstimate(const ActivationEstimate& estimate);

// train.activation_offload once checkpointing is decided (parallel/activation_offload.h). auto:
// on when checkpointing is on, on a GPU, and a step with every layer's kept input on the device
// (allocated now + layers x one input + twice one layer's activations for the recompute) does not
// fit in 90% of it. Rank 0's decision, as above.
CheckpointingDecision DecideOffload(CheckpointingChoice choice, bool checkpointing_on,
                                    LlamaModel& model, int64_t rows, int64_t seq,
                                    parallel::Communicator& comm);
CheckpointingDecision DecideOffloadFromEstimate(const ActivationEstimate& estimate);

}  // namespace qlorad::trainer
