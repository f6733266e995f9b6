#include "worker/trainer/model/fused_layers.h"

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "worker/trainer/runtime/autograd_context.h"

#ifdef QLORAD_HAVE_NF4_OPS
#include "kernels/torch/rms_norm_ops.h"
#include "kernels/torch/swiglu_ops.h"
#endif

namespace qlorad::trainer {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

#ifndef QLORAD_HAVE_NF4_OPS
[[noreturn]] void NoKernels() {
  TORCH_CHECK(false, "fused layers need the qlorad_ops library, which this build lacks");
}
#endif

#ifdef QLORAD_HAVE_NF4_OPS
// The norm's backward of dy (saved: its input, weight and inverse RMS) plus `residual`, the
// gradient of the norm's input that came around it, summed inside the kernel; either may be
// undefined.
at::Tensor NormBackwardPlusResidual(AutogradContext* ctx, const at::Tensor& dy,
                                    const at::Tensor& residual) {
  if (!dy.defined()) return residual;
  const variable_list s = ctx->get_saved_variables();
  // The op takes gradients of any strides: rows spaced wider (a folded projection's dX) it reads
  // in place, anything else it makes contiguous itself.
  return ops::RmsNormBackward(dy, s[0], s[1], s[2], residual);
}

struct RmsNormFunction : torch::autograd::Function<RmsNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    auto [y, inv_rms] = ops::RmsNormForward(x, weight, eps);
    ctx->save_for_backward({x, weight, inv_rms});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {NormBackwardPlusResidual(ctx, grads[0], at::Tensor()), at::Tensor(), at::Tensor()};
  }
};

// Outputs y = norm(x) and x itself, for the residual path: x's two gradients meet in the norm's
// backward kernel (its residual-gradient input) instead of in an add kernel of autograd's.
struct RmsNormForkFunction : torch::autograd::Function<RmsNormForkFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               double eps, int64_t spare_columns) {
    auto [y, inv_rms] = ops::RmsNormForward(x, weight, eps, spare_columns);
    ctx->save_for_backward({x, weight, inv_rms});
    return {y, x};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {NormBackwardPlusResidual(ctx, grads[0], grads[1]), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// Outputs h = x + residual and y = norm(h); both inputs get dL/dh + norm's backward of dL/dy.
struct AddRmsNormFunction : torch::autograd::Function<AddRmsNormFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               const at::Tensor& residual, const at::Tensor& weight, double eps,
                               int64_t spare_columns) {
    auto [h, y, inv_rms] = ops::AddRmsNormForward(x, residual, weight, eps, spare_columns);
    ctx->save_for_backward({h, weight, inv_rms});
    // The model's final norm reads the last layer's two parts and no one reads their sum h: its
    // gradient stays undefined, where autograd would hand backward a tensor of zeros.
    ctx->set_materialize_grads(false);
    return {h, y};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor d = NormBackwardPlusResidual(ctx, grads[1], grads[0]);
    return {d, d, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct SwigluFunction : torch::autograd::Function<SwigluFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate_up) {
    ctx->save_for_backward({gate_up});
    const auto [gate, up] = GateAndUp(gate_up);
    return ops::SwigluForward(gate, up);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto [gate, up] = GateAndUp(ctx->get_saved_variables()[0]);
    return {ops::SwigluBackward(grads[0].contiguous(), gate, up)};
  }
};

// Inputs: gate_up, then down's adapters (FusedProjection::Adapters()).
struct SwigluDownFunction : torch::autograd::Function<SwigluDownFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate_up,
                            at::TensorList adapters, const FusedProjection* down) {
    SaveBorrowed(ctx, "down", down);
    const auto [gate, up] = GateAndUp(gate_up);
    // h with room for down's x A^T (InputRoom): down then folds its adapters into its GEMM.
    const at::Tensor h = ops::SwigluForward(gate, up, down->InputRoom());
    at::Tensor xa;
    const at::Tensor y = down->Forward2d(h.reshape({-1, h.size(-1)}), adapters, &xa);
    // xa alone, out of h's spare columns: saving that view would keep all of h, which backward
    // makes again.
    std::vector<at::Tensor> saved = {gate_up, xa.defined() ? xa.contiguous() : xa};
    saved.insert(saved.end(), adapters.begin(), adapters.end());
    ctx->save_for_backward(saved);
    auto sizes = gate_up.sizes().vec();
    sizes.back() = down->out_features();
    return y.view(sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto* down = LoadBorrowed<const FusedProjection>(ctx, "down");
    const variable_list saved = ctx->get_saved_variables();
    const auto [gate, up] = GateAndUp(saved[0]);
    const at::TensorList adapters = at::TensorList(saved).slice(2);
    // dh first: it needs down's input h only for dA, and the SwiGLU backward kernel writes h
    // beside dgate|dup from the gate and up it reads anyway, where recomputing h up front would
    // cost a forward pass over gate and up of its own.
    FusedProjection::PendingAdapterGrads pending;
    const at::Tensor dh = down->BackwardInput2d(gate.scalar_type(), adapters,
                                                grads[0].reshape({-1, down->out_features()}),
                                                /*want_dx=*/true, &pending);
    const auto [dgu, h] = ops::SwigluBackwardAndH(dh.view(gate.sizes()), gate, up);
    variable_list adapter_grads;
    down->AdapterGrads2d(pending, h.reshape({-1, h.size(-1)}), saved[1], adapters, &adapter_grads);
    variable_list out = {dgu};
    out.insert(out.end(), adapter_grads.begin(), adapter_grads.end());
    out.emplace_back();  // the projection pointer
    return out;
  }
};
#endif

}  // namespace

std::pair<at::Tensor, at::Tensor> GateAndUp(const at::Tensor& gate_up) {
  const int64_t inner = gate_up.size(-1) / 2;
  return {gate_up.narrow(-1, 0, inner), gate_up.narrow(-1, inner, inner)};
}

bool FusedPathsEnabled() {
  // Read on every call, not cached: a test may set it between runs in one process.
  const char* value = std::getenv("QLORAD_FUSED");
  return value == nullptr || std::string(value) != "0";
}

#ifdef QLORAD_HAVE_NF4_OPS
namespace {

// Whether every fused op has a kernel for `key`. The library registers them when it loads, before
// any model runs, so the answer is looked up once per key rather than in every layer's forward.
bool KernelsRegistered(c10::DispatchKey key) {
  for (const char* name :
       {"qlorad::rms_norm", "qlorad::add_rms_norm", "qlorad::rms_norm_backward", "qlorad::swiglu",
        "qlorad::swiglu_backward", "qlorad::swiglu_backward_and_h"}) {
    const auto op = c10::Dispatcher::singleton().findSchema({name, ""});
    if (!op || !op->hasKernelForDispatchKey(key)) return false;
  }
  return true;
}

}  // namespace
#endif

bool FusedLayersAvailable(at::Device device, at::ScalarType dtype) {
  if (!FusedPathsEnabled()) return false;
#ifdef QLORAD_HAVE_NF4_OPS
  const bool float_dtype = dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
  if (!float_dtype) return false;
  static const bool cpu = KernelsRegistered(c10::DispatchKey::CPU);
  static const bool cuda = KernelsRegistered(c10::DispatchKey::CUDA);
  return device.is_cuda() ? cuda : cpu;  // other devices (meta) go by the CPU's kernels
#else
  (void)dtype;
  return false;
#endif
}

at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
#ifdef QLORAD_HAVE_NF4_OPS
  return RmsNormFunction::apply(x, weight, eps);
#else
  (void)x, (void)weight, (void)eps;
  NoKernels();
#endif
}

std::pair<at::Tensor, at::Tensor> FusedRmsNormFork(const at::Tensor& x, const at::Tensor& weight,
                                                   double eps, int64_t spare_columns) {
#ifdef QLORAD_HAVE_NF4_OPS
  auto out = RmsNormForkFunction::apply(x, weight, eps, spare_columns);
  return {out[0], out[1]};
#else
  (void)x, (void)weight, (void)eps, (void)spare_columns;
  NoKernels();
#endif
}

std::pair<at::Tensor, at::Tensor> FusedAddRmsNorm(const at::Tensor& x, const at::Tensor& residual,
                                                  const at::Tensor& weight, double eps,
                                                  int64_t spare_columns) {
#ifdef QLORAD_HAVE_NF4_OPS
  auto out = AddRmsNormFunction::apply(x, residual, weight, eps, spare_columns);
  return {out[0], out[1]};
#else
  (void)x, (void)residual, (void)weight, (void)eps, (void)spare_columns;
  NoKernels();
#endif
}

at::Tensor FusedSwigluDown(const at::Tensor& gate_up, const FusedProjection& down) {
#ifdef QLORAD_HAVE_NF4_OPS
  // As a TensorList, so that autograd sees each adapter as an input (a vector it would not).
  const std::vector<at::Tensor> adapters = down.Adapters();
  return SwigluDownFunction::apply(gate_up, at::TensorList(adapters), &down);
#else
  (void)gate_up, (void)down;
  NoKernels();
#endif
}

at::Tensor FusedSwiglu(const at::Tensor& gate_up) {
#ifdef QLORAD_HAVE_NF4_OPS
  return SwigluFunction::apply(gate_up);
#else
  (void)gate_up;
  NoKernels();
#endif
}

}  // namespace qlorad::trainer
