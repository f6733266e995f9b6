#include "worker/trainer/train/fused_adamw.h"

#include <ATen/ops/_fused_adamw.h>
#include <torch/csrc/autograd/variable.h>

#include <vector>

#include "worker/trainer/runtime/host_staging.h"

namespace qlorad::trainer {

void FusedAdamWStep(torch::optim::AdamW& optimizer) {
  at::NoGradGuard no_grad;
  auto& states = optimizer.state();
  for (auto& group : optimizer.param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    TORCH_CHECK(!options.amsgrad(), "FusedAdamWStep: amsgrad is not supported");
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs;
    std::vector<torch::optim::AdamWParamState*> param_states;
    for (const at::Tensor& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = states[p.unsafeGetTensorImpl()];
      if (!slot) {  // as AdamW::step() creates it
        auto state = std::make_unique<torch::optim::AdamWParamState>();
        state->step(0);
        state->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        state->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        slot = std::move(state);
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*slot);
      params.push_back(p);
      grads.push_back(p.grad());
      exp_avgs.push_back(state.exp_avg());
      exp_avg_sqs.push_back(state.exp_avg_sq());
      param_states.push_back(&state);
    }
    if (params.empty()) continue;
    // The kernel reads the step number (for bias correction) from float tensors on the
    // parameters' device, already counting this step, as torch.optim's _fused_adamw passes them;
    // one buffer holds them all (one copy to the device, not one per parameter), staged so that
    // the host does not wait for the step's backward to finish before it can queue the update.
    std::vector<float> counts;
    for (const auto* state : param_states) counts.push_back(static_cast<float>(state->step() + 1));
    const at::Tensor steps = CopyToDeviceAsync(at::tensor(counts, at::kFloat), params[0].device());
    const std::vector<at::Tensor> state_steps = steps.unbind();
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, state_steps,
                      options.lr(), std::get<0>(options.betas()), std::get<1>(options.betas()),
                      options.weight_decay(), options.eps(), /*amsgrad=*/false,
                      /*maximize=*/false);
    for (auto* state : param_states) state->step(state->step() + 1);
    // The fused kernel writes the parameters without bumping their version counters, as an
    // in-place op would; bump them, so that what keys on versions (AdapterCastCache, autograd's
    // saved-tensor checks) sees the update.
    for (const at::Tensor& p : params) torch::autograd::impl::bump_version(p);
  }
}

}  // namespace qlorad::trainer
