// Activation checkpointing, as PyTorch's reentrant torch.utils.checkpoint (what Hugging Face's
// gradient_checkpointing uses): forward runs a function without building a graph and keeps only
// its input; backward runs it again from that input with grad enabled and backpropagates the
// incoming gradient through the recomputed graph. Memory for one extra forward of the function.
//
// The inner backward accumulates into every leaf the function reaches (the LoRA parameters), as
// the reentrant flavour does; the checkpoint hands autograd the input's gradient only.
// Random draws (dropout) repeat: the default generators of the CPU, and of the input's CUDA
// device, are saved before the forward and replayed for the recompute, then put back.
#pragma once

#include <torch/torch.h>

#include <functional>

namespace qlorad::trainer {

// x -> y; `extras` are further inputs that take no gradient (rotary tables, masks), handed back
// as given. It must draw random numbers only from the default generators (see above).
using CheckpointedFunction = std::function<at::Tensor(const at::Tensor& x, at::TensorList extras)>;

// fn(x, extras) with only x and `extras` kept for backward. Gradients reach the leaves inside fn
// even when x needs none (a frozen embedding's output). `extras` must not require grad; `fn` must
// outlive the graph (as FrozenLinear's source).
at::Tensor Checkpoint(const CheckpointedFunction& fn, const at::Tensor& x,
                      at::TensorList extras = {});

// Whether this thread is running a checkpointed function again for backward. Code that behaves
// differently in forward and backward (fsdp's gathers) reads it: the recompute is a forward
// whose graph backward consumes at once.
bool InActivationRecompute();

}  // namespace qlorad::trainer
