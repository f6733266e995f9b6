#include "worker/trainer/train/checkpointing_choice.h"

#include <cstdio>
#include <optional>
#include <tuple>

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

// Whether a step of `e.step_bytes` fits: 90% of the device is the line (the allocator's
// fragmentation takes some of the rest).
bool Fits(const ActivationEstimate& e) {
  return e.step_bytes <= e.device_bytes / 10 * 9;
}

// Every rank takes rank 0's auto decisions: recompute and offload change what each rank's
// backward does (and, under fsdp, the order of its collectives). Explicit choices come from the
// one spec every rank reads, so only auto ones travel (and every rank knows which those are).
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

CheckpointingDecision DecideFromEstimate(const ActivationEstimate& e) {
  return {!Fits(e), std::string("auto: a step without it needs about ") + GiB(e.step_bytes) +
                        " of " + GiB(e.device_bytes) + " (" + GiB(e.per_layer_bytes) +
                        " of activations per layer)"};
}

CheckpointingDecision DecideOffloadFromEstimate(const ActivationEstimate& e) {
  return {!Fits(e), std::string("auto: with the layers' inputs on the device a step needs about ") +
                        GiB(e.step_bytes) + " of " + GiB(e.device_bytes)};
}

ActivationPlan PlanActivations(CheckpointingChoice checkpointing, CheckpointingChoice offload,
                               LlamaModel& model, int64_t rows, int64_t seq,
                               parallel::Communicator& comm) {
  const at::Device device = model->device();
  const LlamaConfig& config = model->config();
  // One layer's activations, measured at most once, and only for an auto choice on a GPU.
  std::optional<int64_t> per_layer;
  const auto measure = [&] {
    if (!per_layer) per_layer = MeasureLayerActivations(model, rows, seq);
    return *per_layer;
  };
  ActivationPlan plan;

  if (checkpointing != CheckpointingChoice::kAuto) {
    plan.checkpointing = {checkpointing == CheckpointingChoice::kOn,
                          "train.activation_checkpointing"};
  } else if (!device.is_cuda()) {
    plan.checkpointing = {false, "auto: on a CPU"};
  } else {
    const int64_t layer = measure();
    // Backward's transients are about one more layer's worth; the loss adds its chunk, which the
    // layer's own activations at this shape bound from above for the models we train.
    plan.checkpointing = DecideFromEstimate(
        {layer, MemoryOf(device)->allocated + (config.num_hidden_layers + 2) * layer,
         MemoryOf(device)->total});
  }
  if (!plan.checkpointing.on && offload == CheckpointingChoice::kOn) {
    plan.checkpointing = {true, "train.activation_offload: true offloads what it keeps"};
  }

  if (offload != CheckpointingChoice::kAuto) {
    plan.offload = {offload == CheckpointingChoice::kOn, "train.activation_offload"};
  } else if (!plan.checkpointing.on) {
    plan.offload = {false, "auto: checkpointing is off"};
  } else if (!device.is_cuda()) {
    plan.offload = {false, "auto: on a CPU"};
  } else {
    const int64_t layer = measure();
    const int64_t input_bytes =
        rows * seq * config.hidden_size * static_cast<int64_t>(c10::elementSize(model->dtype()));
    // Recompute holds every layer's input, and one layer's activations (twice, with backward's
    // transients) at a time.
    plan.offload = DecideOffloadFromEstimate(
        {layer, MemoryOf(device)->allocated + config.num_hidden_layers * input_bytes + 2 * layer,
         MemoryOf(device)->total});
  }
  // A forced checkpointing (offload: true) or a CPU's auto is the same on every rank too.
  AgreeWithRankZero(plan, checkpointing == CheckpointingChoice::kAuto && device.is_cuda(),
                    offload == CheckpointingChoice::kAuto && device.is_cuda(), device, comm);
  return plan;
}

}  // namespace qlorad::trainer
