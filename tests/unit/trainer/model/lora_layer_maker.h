// Random QLoraLinear layers for the fast path's tests.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "worker/trainer/model/qlora_linear.h"

namespace qlorad::trainer::testing {

// [out <- in] in `dtype` (NF4 with nf4), with a rank-4 adapter whose B is not zero, so the
// low-rank update shows in every output and gradient. Draws from seeds seed, seed + 1, seed + 2.
inline QLoraLinear RandomLoraLayer(int64_t out, int64_t in, uint64_t seed,
                                   at::ScalarType dtype = at::kFloat, double scale = 0.5,
                                   double dropout = 0.0, bool nf4 = false) {
  auto gen = [](uint64_t s) { return at::make_generator<at::CPUGeneratorImpl>(s); };
  QLoraLinear layer(at::randn({out, in}, gen(seed)).to(dtype));
  if (nf4) layer->QuantizeNF4(64, true);
  layer->AddLora({4, scale, dropout, dtype}, gen(seed + 1));
  at::NoGradGuard no_grad;
  layer->lora_b().copy_(at::randn({out, 4}, gen(seed + 2)));
  return layer;
}

}  // namespace qlorad::trainer::testing
