#include "worker/trainer/loss/fused_linear_ce.h"

#include <algorithm>

#ifdef QLORAD_HAVE_NF4_OPS
#include "kernels/torch/ce_online_ops.h"
#include "kernels/torch/ce_ops.h"
#endif

namespace qlorad::trainer {

#ifdef QLORAD_HAVE_NF4_OPS

namespace {

class FusedLinearCrossEntropyFunction
    : public torch::autograd::Function<FusedLinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden,
                            const at::Tensor& weight, const at::Tensor& labels,
                            double label_smoothing, double z_loss, int64_t ignore_index,
                            int64_t chunk_rows) {
    const bool need_hidden = hidden.requires_grad();
    const bool need_weight = weight.requires_grad();
    const at::Tensor h_all = hidden.detach();
    // The matmuls run in the activation dtype, as the generic path's do.
    const at::Tensor w = weight.detach().to(hidden.scalar_type());
    const ops::CrossEntropyKernelOptions kernel_options{
        .ignore_index = ignore_index, .label_smoothing = label_smoothing, .z_loss = z_loss};
    if (!need_weight) {
      // A frozen head (QLoRA's): the online kernel never holds a [rows, V] buffer, in the same two
      // matmuls (ce_online_ops.h). Auto (0): its own sizes; else its rows capped by the caller's.
      const int64_t rows =
          chunk_rows > 0
              ? std::min(chunk_rows, ops::OnlineCeTilingFor(h_all.size(0), h_all.size(1), w.size(0),
                                                            h_all.element_size())
                                         .rows)
              : 0;
      auto [losses, grad_hidden] = ops::LinearCrossEntropyOnline(
          h_all, w, labels, kernel_options, rows, /*cols=*/0, /*compute_grad=*/need_hidden);
      ctx->save_for_backward({need_hidden ? grad_hidden : at::Tensor(), at::Tensor()});
      return losses.sum(at::kDouble);
    }
    at::Tensor grad_hidden = need_hidden ? at::empty(h_all.sizes(), h_all.options()) : at::Tensor();
    // W's gradient is summed over chunks in at least fp32, so that many chunks do not round away.
    at::Tensor grad_weight =
        need_weight
            ? at::zeros(weight.sizes(),
                        weight.options().dtype(at::promote_types(weight.scalar_type(), at::kFloat)))
            : at::Tensor();
    at::Tensor total = at::zeros({}, hidden.options().dtype(at::kDouble));
    const int64_t n = hidden.size(0);
    const int64_t auto_rows = FusedLossChunkRows(n, hidden.size(1), w.size(0));
    chunk_rows = chunk_rows > 0 ? std::min(chunk_rows, auto_rows) : auto_rows;
    for (int64_t start = 0; start < n; start += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, n - start);
      const at::Tensor h = h_all.narrow(0, start, rows);
      // The only [rows, V] buffer: it holds the logits, then d(loss)/d(logits), and is freed at the
      // end of the iteration, before the next chunk's is allocated.
      at::Tensor logits = at::linear(h, w);
      const at::Tensor losses = ops::CrossEntropyLossAndGrad_(logits, labels.narrow(0, start, rows),
                                                              kernel_options, /*grad_scale=*/1.0);
      total += losses.sum(at::kDouble);
      if (need_hidden) {
        at::Tensor rows_of_grad = grad_hidden.narrow(0, start, rows);
        at::mm_out(rows_of_grad, logits, w);
      }
      // add_ promotes the activation-dtype product into the fp32 sum without an fp32 [V, d] copy.
      if (need_weight) grad_weight.add_(at::mm(logits.t(), h));
    }
    if (need_weight) grad_weight = grad_weight.to(weight.scalar_type());
    ctx->save_for_backward({grad_hidden, grad_weight});
    return total;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    // Unpacking checks the saved tensors' versions, so a second backward through a retained graph
    // (after the in-place scaling below) fails loudly instead of scaling twice.
    auto saved = ctx->get_saved_variables();
    torch::autograd::variable_list grads(7);
    for (size_t i = 0; i < 2; ++i) {
      // The loss is linear in its upstream gradient: scale what forward computed, in place, so
      // backward allocates no second [N, d] (or [V, d]) tensor; the saved copy is released right
      // after this node runs, and the result becomes the input's gradient as it is.
      if (saved[i].defined()) grads[i] = saved[i].mul_(grad_outputs[0].to(saved[i].scalar_type()));
    }
    return grads;
  }
};

}  // namespace

bool FusedLinearCrossEntropyAvailable() {
  return true;
}

at::Tensor FusedLinearCrossEntropy(const at::Tensor& hidden, const at::Tensor& weight,
                                   const at::Tensor& labels, const CrossEntropyOptions& options,
                                   int64_t chunk_rows) {
  return FusedLinearCrossEntropyFunction::apply(hidden, weight, labels, options.label_smoothing,
                                                options.z_loss, options.ignore_index, chunk_rows);
}

#else  // !QLORAD_HAVE_NF4_OPS

bool FusedLinearCrossEntropyAvailable() {
  return false;
}

at::Tensor FusedLinearCrossEntropy(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const CrossEntropyOptions&, int64_t) {
  TORCH_CHECK(false,
              "the fused cross-entropy needs the kernels' operator library (qlorad_ops), "
              "which this build of the trainer lacks");
  return {};
}

#endif

}  // namespace qlorad::trainer
