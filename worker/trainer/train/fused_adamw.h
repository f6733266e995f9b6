// One AdamW step for every parameter of a torch::optim::AdamW through ATen's fused multi-tensor
// kernel (_fused_adamw_, what torch.optim.AdamW(fused=True) runs), on CUDA and on the CPU.
//
// Why: torch::optim::AdamW::step() loops over the parameters with about ten kernels each; a LoRA
// on every projection of a 16-layer model has 224 of them, so the step cost ~11 ms of launches on
// an H100, which one rank of a 2-GPU run pays per half-size step (bench/parallel). The fused
// kernel makes it a handful of launches.
//
// The state stays in the optimizer (exp_avg, exp_avg_sq, step per parameter, created as its own
// step() creates them), so checkpoints (torch::save of the optimizer) and torch's own step() see
// the same state. The math is torch's decoupled weight decay AdamW; the fused kernel rounds in a
// different order (fp32 opmath), so the results agree with step() to fp32 rounding, not bitwise.
#pragma once

#include <torch/torch.h>

namespace qlorad::trainer {

// Steps every parameter that has a gradient, with each group's lr, betas, eps and weight decay.
// amsgrad is not supported (the trainer never asks for it): throws if a group sets it.
void FusedAdamWStep(torch::optim::AdamW& optimizer);

}  // namespace qlorad::trainer
