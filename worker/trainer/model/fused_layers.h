// The decoder layer's elementwise parts as one kernel each way (kernels/torch/*_ops.h), with
// hand-written backward passes that save no more than the kernels need:
//   RMSNorm            saves its input and the fp32 inverse RMS per row
//   residual + RMSNorm one kernel for h = x + residual and norm(h); backward adds the residual
//                      stream's gradient inside the norm's backward kernel
//   SwiGLU             reads gate|up as one [.., 2I] tensor (the fused gate/up projection's output)
//                      and gives its gradient back as one [.., 2I] tensor, so neither side slices
// (Rotary embedding and attention: attention.h, FusedRotaryAttention.)
// Semantics are Hugging Face's (the kernels' headers say exactly how they round).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>

#include "worker/trainer/model/fused_projection.h"

namespace qlorad::trainer {

// Whether the fast paths may run: QLORAD_FUSED=0 turns them off (every layer then runs
// module by module, the reference path, for side-by-side comparisons); unset or anything else: on.
// FusedProjection::Applies and attention ask too.
bool FusedPathsEnabled();

// Whether the fused kernels can run here: the operator library is linked in with kernels for
// `device`, and `dtype` is one they take.
bool FusedLayersAvailable(at::Device device, at::ScalarType dtype);

// weight * norm(x) (weight frozen: no gradient for it).
at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);
// (weight * norm(x), x): x again as a second output for the residual path, so that backward adds
// the residual's gradient inside the norm's backward kernel, not in an add kernel of its own.
// spare_columns: the norm's output is the first columns of rows that much wider, the rest left for
// the projection it feeds (FusedProjection::InputRoom(): it writes x A there).
std::pair<at::Tensor, at::Tensor> FusedRmsNormFork(const at::Tensor& x, const at::Tensor& weight,
                                                   double eps, int64_t spare_columns = 0);
// (h, weight * norm(h)) for h = x + residual; spare_columns as above.
std::pair<at::Tensor, at::Tensor> FusedAddRmsNorm(const at::Tensor& x, const at::Tensor& residual,
                                                  const at::Tensor& weight, double eps,
                                                  int64_t spare_columns = 0);
// gate_up [.., 2I] (gate then up) -> silu(gate) * up [.., I].
at::Tensor FusedSwiglu(const at::Tensor& gate_up);
// down(silu(gate) * up) [.., down.out_features()], where `down` Applies: SwiGLU's output [.., I],
// the widest activation of the layer, is never kept; backward computes it again from gate|up,
// which SwiGLU's own backward reads anyway. `down` must outlive the graph.
at::Tensor FusedSwigluDown(const at::Tensor& gate_up, const FusedProjection& down);
// gate_up [.., 2I] -> its gate and up halves, as views.
std::pair<at::Tensor, at::Tensor> GateAndUp(const at::Tensor& gate_up);

}  // namespace qlorad::trainer
