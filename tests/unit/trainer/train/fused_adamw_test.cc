#include "worker/trainer/train/fused_adamw.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

namespace qlorad::trainer {
namespace {

// Parameters of LoRA-like shapes, one without a gradient; the same values in both lists.
std::vector<at::Tensor> MakeParams(uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<at::Tensor> params;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{8, 33}, {65, 8}, {1}, {4, 4}}) {
    params.push_back(torch::randn(shape, torch::kFloat).requires_grad_(true));
  }
  return params;
}

void SetGrads(const std::vector<at::Tensor>& params, int step) {
  torch::manual_seed(100 + step);
  for (size_t i = 0; i + 1 < params.size(); ++i) {  // the last one never gets a gradient
    params[i].mutable_grad() = torch::randn_like(params[i]) * (1.0 + i);
  }
}

torch::optim::AdamWOptions Options() {
  return torch::optim::AdamWOptions(1e-2).betas({0.8, 0.95}).eps(1e-6).weight_decay(0.1);
}

TEST(FusedAdamW, MatchesTorchAdamWStepByStepAndSharesItsState) {
  std::vector<at::Tensor> ours = MakeParams(1);
  std::vector<at::Tensor> reference = MakeParams(1);
  torch::optim::AdamW fused(ours, Options());
  torch::optim::AdamW plain(reference, Options());
  for (int step = 0; step < 6; ++step) {
    const double lr = 1e-2 * (1.0 + 0.5 * step);  // as the scheduler changes it between steps
    for (auto* opt : {&fused, &plain}) {
      for (auto& group : opt->param_groups()) group.options().set_lr(lr);
    }
    SetGrads(ours, step);
    SetGrads(reference, step);
    if (step < 5) {
      FusedAdamWStep(fused);
    } else {
      fused.step();  // torch's own step continues from the state the fused steps left
    }
    plain.step();
    for (size_t i = 0; i < ours.size(); ++i) {
      // fp32: the two round in a different order, so agreement is to a few ulps of the update.
      EXPECT_TRUE(torch::allclose(ours[i], reference[i], /*rtol=*/1e-5, /*atol=*/1e-6))
          << "parameter " << i << " after step " << step << ": max diff "
          << (ours[i] - reference[i]).abs().max().item<float>();
    }
  }
  const auto& fused_state = static_cast<const torch::optim::AdamWParamState&>(
      *fused.state().at(ours[0].unsafeGetTensorImpl()));
  const auto& plain_state = static_cast<const torch::optim::AdamWParamState&>(
      *plain.state().at(reference[0].unsafeGetTensorImpl()));
  EXPECT_EQ(fused_state.step(), 6);
  EXPECT_EQ(plain_state.step(), 6);
  EXPECT_TRUE(torch::allclose(fused_state.exp_avg_sq(), plain_state.exp_avg_sq(), 1e-5, 1e-9));
  // A parameter that never had a gradient is left alone and gets no state, as in torch.
  EXPECT_TRUE(torch::equal(ours.back(), MakeParams(1).back()));
  EXPECT_EQ(fused.state().count(ours.back().unsafeGetTensorImpl()), 0u);
}

// Like any in-place op: the bf16 copies of AdapterCastCache key on it.
TEST(FusedAdamW, BumpsTheVersionOfEveryParameterItUpdates) {
  std::vector<at::Tensor> params = MakeParams(2);
  torch::optim::AdamW optimizer(params, Options());
  SetGrads(params, 0);
  std::vector<int64_t> before;
  for (const at::Tensor& p : params) before.push_back(p._version());
  FusedAdamWStep(optimizer);
  for (size_t i = 0; i + 1 < params.size(); ++i) EXPECT_GT(params[i]._version(), before[i]) << i;
  EXPECT_EQ(params.back()._version(), before.back());  // no gradient: not updated
}

TEST(FusedAdamW, RefusesAmsgrad) {
  std::vector<at::Tensor> params = MakeParams(2);
  torch::optim::AdamW opt(params, Options().amsgrad(true));
  SetGrads(params, 0);
  EXPECT_THROW(FusedAdamWStep(opt), c10::Error);
}

}  // namespace
}  // namespace qlorad::trainer
