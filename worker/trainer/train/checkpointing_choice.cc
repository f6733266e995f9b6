#include "worker/trainer/train/checkpointing_choice.h"

#include <cstdio>

#include "worker/trainer/runtime/device.h"

namespace qlorad::trainer {

namespace {

std::string GiB(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f GiB", static_cast<double>(bytes) / (1 << 30));
  return text;
}

// Bytes a layer's forward keeps for backward at rows x seq: the model's forward with every layer
// but the first skipped, graph alive, against what was allocated before. The embedding and final
// norm outputs count too, which errs towards checkpointing.
int64_t MeasureLayerActivations(LlamaModel& model, int64_t rows, int64_t seq) {
  const at::Device device = model->device();
  const int64_t before = MemoryOf(device)->allocated;
  int64_t measured = 0;
  {
    bool first = true;
    model->SetLayerRunner([&first](int64_t, const LlamaDecoderLayerImpl&,
                                   const LayerFunction& function, const at::Tensor& x,
                                   at::TensorList extras) {
      if (!first) return x;
      first = false;
      return function(x, extras);
    });
    const at::Tensor ids = at::zeros({rows, seq}, at::TensorOptions(at::kLong).device(device));
    at::Tensor hidden = model->forward(ids);
    measured = MemoryOf(device)->allocated - before;
  }
  model->SetLayerRunner({});
  return measured;
}

// Every rank takes rank 0's decision: recompute and offload change what each rank's backward does
// (and, under fsdp, the order of its collectives).
void AgreeWithRankZero(CheckpointingDecision& decision, at::Device device,
                       parallel::Communicator& comm) {
  if (comm.world_size() <= 1) return;
  at::Tensor on = at::full({1}, decision.on ? 1 : 0, at::TensorOptions(at::kInt).device(device));
  auto work = comm.Broadcast(on, 0);
  const Status status = work->Wait();
  TORCH_CHECK(status.ok(), "activation checkpointing decision: ", status.ToString());
  if (comm.rank() != 0) {
    decision.on = on.item<int>() != 0;
    decision.why = "auto: rank 0's decision";
  }
}

}  // namespace

CheckpointingDecision DecideFromEstimate(const ActivationEstimate& e) {
  const bool fits = e.step_bytes <= e.device_bytes / 10 * 9;
  return {!fits, std::string("auto: a step without it needs about ") + GiB(e.step_bytes) + " of " +
                     GiB(e.device_bytes) + " (" + GiB(e.per_layer_bytes) +
                     " of activations per layer)"};
}

CheckpointingDecision DecideCheckpointing(CheckpointingChoice choice, LlamaModel& model,
                                          int64_t rows, int64_t seq, parallel::Communicator& comm) {
  if (choice == CheckpointingChoice::kOn) return {true, "train.activation_checkpointing"};
  if (choice == CheckpointingChoice::kOff) return {false, "train.activation_checkpointing"};
  const at::Device device = model->device();
  if (!device.is_cuda()) return {false, "auto: on a CPU"};
  const int64_t per_layer = MeasureLayerActivations(model, rows, seq);
  const auto memory = MemoryOf(device);
  const int64_t layers = model->config().num_hidden_layers;
  // Backward's transients are about one more layer's worth; the loss adds its chunk, which the
  // layer's own activations at this shape bound from above for the models we train.
  ActivationEstimate estimate{per_layer, memory->allocated + (layers + 2) * per_layer,
                              memory->total};
  CheckpointingDecision decision = DecideFromEstimate(estimate);
  AgreeWithRankZero(decision, device, comm);
  return decision;
}

CheckpointingDecision DecideOffloadFromEstimate(const ActivationEstimate& e) {
  const bool fits = e.step_bytes <= e.device_bytes / 10 * 9;
  return {!fits, std::string("auto: with the layers' inputs on the device a step needs about ") +
                     GiB(e.step_bytes) + " of " + GiB(e.device_bytes)};
}

CheckpointingDecision DecideOffload(CheckpointingChoice choice, bool checkpointing_on,
                                    LlamaModel& model, int64_t rows, int64_t seq,
                                    parallel::Communicator& comm) {
  if (choice == CheckpointingChoice::kOn) return {true, "train.activation_offload"};
  if (choice == CheckpointingChoice::kOff) return {false, "train.activation_offload"};
  if (!checkpointing_on) return {false, "auto: checkpointing is off"};
  const at::Device device = model->device();
  if (!device.is_cuda()) return {false, "auto: on a CPU"};
  const int64_t per_layer = MeasureLayerActivations(model, rows, seq);
  const auto memory = MemoryOf(device);
  const LlamaConfig& config = model->config();
  const int64_t input_bytes =
      rows * seq * config.hidden_size * static_cast<int64_t>(c10::elementSize(model->dtype()));
  // Recompute holds every layer's input, and one layer's activations (twice, with backward's
  // transients) at a time.
  ActivationEstimate estimate{
      per_layer, memory->allocated + config.num_hidden_layers * input_bytes + 2 * per_layer,
      memory->total};
  CheckpointingDecision decision = DecideOffloadFromEstimate(estimate);
  AgreeWithRankZero(decision, device, comm);
  return decision;
}

}  // namespace qlorad::trainer
