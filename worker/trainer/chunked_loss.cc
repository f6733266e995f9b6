#include "worker/trainer/chunked_loss.h"

#include <algorithm>
#include <utility>

namespace qlorad::trainer {

namespace {

// Carries the per-chunk loss from forward to backward inside the autograd context, which only
// stores IValues.
struct ChunkLossHolder : torch::CustomClassHolder {
  explicit ChunkLossHolder(ChunkLossFn f) : fn(std::move(f)) {}
  ChunkLossFn fn;
};

at::Tensor ChunkLogits(const at::Tensor& hidden_chunk, const at::Tensor& weight) {
  // The matmul runs in the activation dtype (as the unchunked lm_head did); the loss in at least
  // fp32 (fp64 inputs stay fp64, which the reference tests rely on).
  at::Tensor logits = at::linear(hidden_chunk, weight);
  return logits.to(at::promote_types(logits.scalar_type(), at::kFloat));
}

class ChunkedLinearLossFunction : public torch::autograd::Function<ChunkedLinearLossFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden,
                            const at::Tensor& weight, const at::Tensor& targets,
                            const std::shared_ptr<const ChunkLossFn>& loss, int64_t chunk_rows) {
    const int64_t n = hidden.size(0);
    // Chunk sums are added in fp64 so the result does not depend on the chunk size beyond the
    // fp32 rounding inside each chunk.
    at::Tensor total = at::zeros({}, hidden.options().dtype(at::kDouble));
    for (int64_t start = 0; start < n; start += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, n - start);
      at::Tensor logits = ChunkLogits(hidden.narrow(0, start, rows), weight);
      total += (*loss)(logits, targets.narrow(0, start, rows)).to(at::kDouble);
    }
    ctx->save_for_backward({hidden, weight, targets});
    ctx->saved_data["loss"] = at::IValue::make_capsule(c10::make_intrusive<ChunkLossHolder>(*loss));
    ctx->saved_data["chunk_rows"] = chunk_rows;
    return total;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& hidden = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& targets = saved[2];
    const auto holder =
        c10::static_intrusive_pointer_cast<ChunkLossHolder>(ctx->saved_data["loss"].toCapsule());
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const bool need_hidden = ctx->needs_input_grad(0);
    const bool need_weight = ctx->needs_input_grad(1);

    at::Tensor grad_hidden = need_hidden ? at::zeros_like(hidden) : at::Tensor();
    // Summed over chunks in at least fp32 even for bf16/fp16 weights, so many chunks do not round
    // away.
    const at::ScalarType accumulate = at::promote_types(weight.scalar_type(), at::kFloat);
    at::Tensor grad_weight =
        need_weight ? at::zeros(weight.sizes(), weight.options().dtype(accumulate)) : at::Tensor();
    if (need_hidden || need_weight) {
      torch::AutoGradMode enable_grad(true);
      const at::Tensor w = weight.detach().requires_grad_(need_weight);
      const int64_t n = hidden.size(0);
      for (int64_t start = 0; start < n; start += chunk_rows) {
        const int64_t rows = std::min(chunk_rows, n - start);
        const at::Tensor h = hidden.narrow(0, start, rows).detach().requires_grad_(need_hidden);
        const at::Tensor chunk_loss = holder->fn(ChunkLogits(h, w), targets.narrow(0, start, rows));
        torch::autograd::variable_list inputs;
        if (need_hidden) inputs.push_back(h);
        if (need_weight) inputs.push_back(w);
        const auto grads =
            torch::autograd::grad({chunk_loss}, inputs, {grad_outputs[0].to(chunk_loss.dtype())},
                                  /*retain_graph=*/false, /*create_graph=*/false,
                                  /*allow_unused=*/true);
        size_t i = 0;
        if (need_hidden) {
          if (grads[i].defined()) grad_hidden.narrow(0, start, rows).copy_(grads[i]);
          ++i;
        }
        if (need_weight && grads[i].defined()) grad_weight += grads[i].to(accumulate);
      }
    }
    if (need_weight) grad_weight = grad_weight.to(weight.scalar_type());
    // One gradient per forward argument; the targets, the loss and chunk_rows get none.
    return {grad_hidden, grad_weight, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

int64_t ResolveLossChunkRows(int64_t requested, int64_t vocab, int64_t budget_bytes) {
  if (requested > 0) return requested;
  const int64_t row_bytes = std::max<int64_t>(vocab, 1) * static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(1, budget_bytes / row_bytes);
}

at::Tensor ChunkedLinearLoss(const at::Tensor& hidden, const at::Tensor& weight,
                             const at::Tensor& targets, ChunkLossFn loss, int64_t chunk_rows) {
  TORCH_CHECK(hidden.dim() == 2, "ChunkedLinearLoss: hidden must be [tokens, d], got ",
              hidden.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == hidden.size(1),
              "ChunkedLinearLoss: weight must be [vocab, ", hidden.size(1), "], got ",
              weight.sizes());
  TORCH_CHECK(targets.dim() >= 1 && targets.size(0) == hidden.size(0),
              "ChunkedLinearLoss: targets must have ", hidden.size(0), " rows, got ",
              targets.sizes());
  TORCH_CHECK(chunk_rows > 0, "ChunkedLinearLoss: chunk_rows must be positive, got ", chunk_rows);
  return ChunkedLinearLossFunction::apply(
      hidden, weight, targets, std::make_shared<const ChunkLossFn>(std::move(loss)), chunk_rows);
}

ChunkLossFn CrossEntropyChunkLoss(const CrossEntropyOptions& options) {
  return [options](const at::Tensor& logits, const at::Tensor& labels) {
    at::Tensor loss = at::cross_entropy_loss(logits, labels, /*weight=*/{}, at::Reduction::Sum,
                                             options.ignore_index, options.label_smoothing);
    if (options.z_loss != 0.0) {
      const at::Tensor valid = labels.ne(options.ignore_index).to(logits.scalar_type());
      loss = loss + options.z_loss * (at::logsumexp(logits, -1).square() * valid).sum();
    }
    return loss;
  };
}

LinearCrossEntropy ChunkedCrossEntropy(const at::Tensor& hidden, const at::Tensor& weight,
                                       const at::Tensor& labels, const CrossEntropyOptions& options,
                                       int64_t chunk_rows) {
  TORCH_CHECK(labels.dim() == 1 && labels.scalar_type() == at::kLong,
              "ChunkedCrossEntropy: labels must be int64 [tokens], got ", labels.scalar_type(), " ",
              labels.sizes());
  LinearCrossEntropy out;
  out.sum = ChunkedLinearLoss(hidden, weight, labels, CrossEntropyChunkLoss(options), chunk_rows);
  out.valid_tokens = labels.ne(options.ignore_index).sum().item<int64_t>();
  return out;
}

}  // namespace qlorad::trainer
