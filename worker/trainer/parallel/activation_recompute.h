// Activation recompute (train.activation_checkpointing), as PyTorch's reentrant
// torch.utils.checkpoint (what Hugging Face's gradient_checkpointing uses): forward runs a function
// without building a graph and keeps only its input; backward runs it again from that input with
// grad enabled and backpropagates the incoming gradient through the recomputed graph. Memory for
// one extra forward of the function.
//
// The inner backward accumulates into every leaf the function reaches (the LoRA parameters), as
// the reentrant flavour does; the checkpoint hands autograd the input's gradient only.
// Random draws (dropout) repeat: the default generators of the CPU, and of the input's CUDA
// device, are saved before the forward and replayed for the recompute, then put back.
#pragma once

#include <torch/torch.h>

#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/model/recompute_keep.h"
#include "worker/trainer/parallel/activation_offload.h"

namespace qlorad::trainer {

// fn(x, extras) with only x and `extras` kept for backward. Gradients reach the leaves inside fn
// even when x needs none (a frozen embedding's output). `extras` take no gradient and are handed
// back as given; fn must draw random numbers only from the default generators (see above) and
// must outlive the graph (as FrozenLinear's source).
struct RecomputeOptions {
  // x and what fn keeps for its recompute wait off the device until backward
  // (activation_offload.h), as decoder layer `layer`'s; none: they stay where they are.
  LayerOffloaders* offload = nullptr;
  int64_t layer = 0;
  // The parts of fn that keep tensors from its forward for its recompute
  // (model/recompute_keep.h): attention keeps its output and log-sum-exp, and the recompute skips
  // attention's forward; the MLP keeps gate|up, and backward skips the gate|up GEMM.
  KeptParts keep;
  // Whether fn draws random numbers (dropout): then the recompute replays the generators' state
  // of forward, so it draws the same masks. Without dropout the generators are left alone, which
  // is what lets a CUDA graph record the step (train/step_graph.h): a CUDA generator's state
  // cannot be read while recording.
  bool draws_random = true;
  // Backward starts the copy back of layer `layer - 1`'s offloaded tensors from these before its
  // recompute: set for a layer that keeps its own on the device above offloaded ones (the
  // offloaders fetch one layer ahead only as an offloaded layer's backward takes its tensors).
  LayerOffloaders* fetch_previous = nullptr;
};
at::Tensor RecomputeInBackward(const LayerFunction& fn, const at::Tensor& x,
                               at::TensorList extras = {}, const RecomputeOptions& options = {});

// From now on, while grad mode is on, each decoder layer of `model` that has something to train
// (its input needs a gradient, or it holds a trainable parameter) keeps only its input and runs
// again in backward: one more forward per layer for the memory of its activations. No-grad
// forwards (eval) are unchanged. `offload`: the kept inputs wait in host memory.
// `keep`: what each layer also keeps for its recompute (in host memory too with `offload`).
// `resident_layers`: with `offload`, the last this many layers keep theirs on the device: forward
// ends without their copies out queued behind the others', and backward starts without waiting
// for copies back.
void ApplyActivationRecompute(LlamaModel& model, bool offload = false, KeptParts keep = {},
                              bool draws_random = true, int64_t resident_layers = 0);

// Whether this thread is running a recomputed function again for backward. Code that behaves
// differently in forward and backward (fsdp's gathers) reads it: the recompute is a forward
// whose graph backward consumes at once.
bool InActivationRecompute();

}  // namespace qlorad::trainer
