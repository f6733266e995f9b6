#include "worker/trainer/model/qlora_linear.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdint>

#include "worker/trainer/runtime/autograd_context.h"

namespace qlorad::trainer {

bool Nf4OpsAvailable([[maybe_unused]] at::DeviceType device) {
#ifdef QLORAD_HAVE_NF4_OPS
  const c10::DispatchKey key = device == at::kCUDA ? c10::DispatchKey::CUDA : c10::DispatchKey::CPU;
  // The device kernels: the functional nf4_dequantize is composite, on top of its .out overload.
  for (const auto& [name, overload] :
       {std::pair{"qlorad::nf4_quantize", ""}, std::pair{"qlorad::nf4_dequantize", "out"}}) {
    const auto op = c10::Dispatcher::singleton().findSchema({name, overload});
    if (!op || !op->hasKernelForDispatchKey(key)) return false;
  }
  return true;
#else
  return false;
#endif
}

QLoraLinearImpl::QLoraLinearImpl(at::Tensor weight)
    : out_features_(weight.size(0)),
      in_features_(weight.size(1)),
      dense_(std::move(weight)),
      own_weight_([this](at::ScalarType dtype, bool) { return BaseWeight(dtype); }) {
  dense_.requires_grad_(false);
}

void QLoraLinearImpl::QuantizeNF4([[maybe_unused]] int64_t block_size,
                                  [[maybe_unused]] bool double_quant) {
#ifdef QLORAD_HAVE_NF4_OPS
  nf4_ = ops::QuantizeNF4(dense_, block_size, double_quant);
  dense_ = at::Tensor();
#else
  TORCH_CHECK(false, "NF4 quantization needs the qlorad_ops library, which this build lacks");
#endif
}

void QLoraLinearImpl::UseNF4([[maybe_unused]] const ops::NF4Weight& weight) {
  TORCH_CHECK(weight.shape == std::vector<int64_t>({out_features_, in_features_}),
              "UseNF4: NF4 weight of shape ", at::IntArrayRef(weight.shape), " for a [",
              out_features_, ", ", in_features_, "] layer");
#ifdef QLORAD_HAVE_NF4_OPS
  nf4_ = weight.to(dense_.device());
  dense_ = at::Tensor();
#else
  TORCH_CHECK(false, "NF4 weights need the qlorad_ops library, which this build lacks");
#endif
}

void QLoraLinearImpl::AddLora(const LoraOptions& options, at::Generator generator) {
  lora_ = options;
  const auto device = nf4_ ? nf4_->packed.device() : dense_.device();
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features_));
  at::Tensor a =
      at::empty({options.r, in_features_}, at::kFloat).uniform_(-bound, bound, generator);
  lora_a_ = register_parameter("lora_A", a.to(device));
  lora_b_ =
      register_parameter("lora_B", at::zeros({out_features_, options.r}, at::kFloat).to(device));
}

at::Tensor QLoraLinearImpl::BaseWeight(at::ScalarType dtype) const {
#ifdef QLORAD_HAVE_NF4_OPS
  if (nf4_) return ops::DequantizeNF4(*nf4_, dtype);
#endif
  return dense_.scalar_type() == dtype ? dense_ : dense_.to(dtype);
}

void QLoraLinearImpl::UseExternalWeights(ExternalWeights weights) {
  external_ = std::move(weights);
  nf4_.reset();
  dense_ = at::Tensor();
  if (has_lora()) {
    // Emptied in place: the registered parameters stay the same tensors, holding nothing.
    at::NoGradGuard no_grad;
    lora_a_.set_(at::empty({0}, lora_a_.options()));
    lora_b_.set_(at::empty({0}, lora_b_.options()));
  }
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct FrozenLinearFunction : torch::autograd::Function<FrozenLinearFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const FrozenWeightSource* source) {
    SaveBorrowed(ctx, "source", source);
    return at::linear(x, (*source)(x.scalar_type(), /*backward=*/false));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto* source = LoadBorrowed<const FrozenWeightSource>(ctx, "source");
    return {grads[0].matmul((*source)(grads[0].scalar_type(), /*backward=*/true)), at::Tensor()};
  }
};

}  // namespace

at::Tensor FrozenLinear(const at::Tensor& x, const FrozenWeightSource& source) {
  return FrozenLinearFunction::apply(x, &source);
}

at::Tensor QLoraLinearImpl::forward(const at::Tensor& x) {
  at::Tensor y = external_ ? external_->base(x) : FrozenLinear(x, own_weight_);
  if (!has_lora()) return y;
  const auto [a, b] = external_ ? external_->lora() : std::make_pair(lora_a_, lora_b_);
  const at::ScalarType dtype = lora_.compute_dtype;
  at::Tensor h = x.to(dtype);
  if (lora_.dropout > 0 && is_training()) h = at::dropout(h, lora_.dropout, /*train=*/true);
  at::Tensor update = at::linear(at::linear(h, a.to(dtype)), b.to(dtype)) * lora_.scale;
  return y + update.to(y.scalar_type());
}

}  // namespace qlorad::trainer
