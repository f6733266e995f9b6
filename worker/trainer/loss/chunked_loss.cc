#include "worker/trainer/loss/chunked_loss.h"

#include <algorithm>
#include <utility>

#include "worker/trainer/loss/fused_linear_ce.h"
#include "worker/trainer/runtime/autograd_context.h"

namespace qlorad::trainer {

namespace {

// Carries what backward needs beyond tensors (the loss, the LoRA scale) and the targets, which
// never get a gradient, from forward to backward inside the autograd context (it stores IValues).
struct ChunkLossHolder : torch::CustomClassHolder {
  ChunkLossHolder(ChunkLossFn f, ChunkTargets t, bool lora, double scale, bool input)
      : fn(std::move(f)),
        targets(std::move(t)),
        has_lora(lora),
        lora_scale(scale),
        has_lora_input(input) {}
  ChunkLossFn fn;
  ChunkTargets targets;
  bool has_lora;  // without LoRA, lora_a and lora_b are empty placeholders
  double lora_scale;
  bool has_lora_input;  // without it, lora_input is an empty placeholder and A sees hidden

  ChunkTargets Rows(int64_t start, int64_t rows) const {
    ChunkTargets chunk;
    chunk.reserve(targets.size());
    for (const at::Tensor& t : targets) chunk.push_back(t.narrow(0, start, rows));
    return chunk;
  }
};

// `lora_chunk`: the adapter's input rows (hidden_chunk itself unless the head has a lora_input).
at::Tensor ChunkLogits(const at::Tensor& hidden_chunk, const at::Tensor& lora_chunk,
                       const at::Tensor& weight, const at::Tensor& lora_a, const at::Tensor& lora_b,
                       bool has_lora, double lora_scale) {
  // The matmul runs in the activation dtype (as the unchunked lm_head did); the loss in at least
  // fp32 (fp64 inputs stay fp64, which the reference tests rely on).
  at::Tensor logits = at::linear(hidden_chunk, weight.to(hidden_chunk.scalar_type()));
  if (has_lora) {
    const at::ScalarType t = hidden_chunk.scalar_type();
    logits = logits + at::linear(at::linear(lora_chunk, lora_a.to(t)), lora_b.to(t)) * lora_scale;
  }
  return logits.to(at::promote_types(logits.scalar_type(), at::kFloat));
}

// Gradients are summed over chunks in at least fp32 even for bf16/fp16 tensors, so that many
// chunks do not round away.
at::Tensor GradAccumulator(const at::Tensor& t, bool needed) {
  if (!needed) return {};
  return at::zeros(t.sizes(), t.options().dtype(at::promote_types(t.scalar_type(), at::kFloat)));
}

class ChunkedLinearLossFunction : public torch::autograd::Function<ChunkedLinearLossFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden,
                            const at::Tensor& weight, const at::Tensor& lora_a,
                            const at::Tensor& lora_b, const at::Tensor& lora_input,
                            const c10::intrusive_ptr<ChunkLossHolder>& holder, int64_t chunk_rows) {
    const int64_t n = hidden.size(0);
    // Chunk sums are added in fp64 so the result does not depend on the chunk size beyond the
    // fp32 rounding inside each chunk.
    at::Tensor total = at::zeros({}, hidden.options().dtype(at::kDouble));
    for (int64_t start = 0; start < n; start += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, n - start);
      const at::Tensor h = hidden.narrow(0, start, rows);
      const at::Tensor x = holder->has_lora_input ? lora_input.narrow(0, start, rows) : h;
      at::Tensor logits =
          ChunkLogits(h, x, weight, lora_a, lora_b, holder->has_lora, holder->lora_scale);
      total += holder->fn(logits, holder->Rows(start, rows)).to(at::kDouble);
    }
    ctx->save_for_backward({hidden, weight, lora_a, lora_b, lora_input});
    SaveOwned(ctx, "holder", holder);
    ctx->saved_data["chunk_rows"] = chunk_rows;
    return total;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto holder = LoadOwned<ChunkLossHolder>(ctx, "holder");
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const at::Tensor& hidden = saved[0];
    // Which of hidden, weight, lora_a, lora_b, lora_input need a gradient; their accumulators.
    // hidden and lora_input are per row (each chunk writes its own rows); the others are summed.
    const auto per_row = [](size_t i) { return i == 0 || i == 4; };
    std::vector<bool> need(5, false);
    std::vector<at::Tensor> leaves(5), sums(5);
    bool any = false;
    for (size_t i = 0; i < 5; ++i) {
      const bool present = i < 2 || (holder->has_lora && (i < 4 || holder->has_lora_input));
      need[i] = present && ctx->needs_input_grad(i);
      any = any || need[i];
      leaves[i] = saved[i].detach();
      if (need[i]) {
        sums[i] = per_row(i) ? at::zeros_like(saved[i]) : GradAccumulator(saved[i], true);
      }
    }
    if (any) {
      torch::AutoGradMode enable_grad(true);
      for (size_t i = 1; i < 4; ++i) {
        if (need[i]) leaves[i].requires_grad_(true);
      }
      const int64_t n = hidden.size(0);
      for (int64_t start = 0; start < n; start += chunk_rows) {
        const int64_t rows = std::min(chunk_rows, n - start);
        const at::Tensor h = leaves[0].narrow(0, start, rows).detach().requires_grad_(need[0]);
        const at::Tensor x = holder->has_lora_input
                                 ? leaves[4].narrow(0, start, rows).detach().requires_grad_(need[4])
                                 : h;
        const at::Tensor chunk_loss = holder->fn(ChunkLogits(h, x, leaves[1], leaves[2], leaves[3],
                                                             holder->has_lora, holder->lora_scale),
                                                 holder->Rows(start, rows));
        torch::autograd::variable_list inputs;
        std::vector<size_t> which;
        for (size_t i = 0; i < 5; ++i) {
          if (!need[i]) continue;
          inputs.push_back(i == 0 ? h : i == 4 ? x : leaves[i]);
          which.push_back(i);
        }
        const auto grads =
            torch::autograd::grad({chunk_loss}, inputs, {grad_outputs[0].to(chunk_loss.dtype())},
                                  /*retain_graph=*/false, /*create_graph=*/false,
                                  /*allow_unused=*/true);
        for (size_t k = 0; k < which.size(); ++k) {
          if (!grads[k].defined()) continue;
          if (per_row(which[k])) {
            sums[which[k]].narrow(0, start, rows).copy_(grads[k]);
          } else {
            sums[which[k]] += grads[k].to(sums[which[k]].scalar_type());
          }
        }
      }
    }
    for (size_t i = 1; i < 4; ++i) {
      if (need[i]) sums[i] = sums[i].to(saved[i].scalar_type());
    }
    // One gradient per forward argument; the holder and chunk_rows get none.
    return {sums[0], sums[1], sums[2], sums[3], sums[4], at::Tensor(), at::Tensor()};
  }
};

void CheckHeadAndRows(const at::Tensor& hidden, const LinearHead& head, int64_t chunk_rows) {
  TORCH_CHECK(hidden.dim() == 2, "ChunkedLinearLoss: hidden must be [tokens, d], got ",
              hidden.sizes());
  TORCH_CHECK(head.weight.dim() == 2 && head.weight.size(1) == hidden.size(1),
              "ChunkedLinearLoss: weight must be [vocab, ", hidden.size(1), "], got ",
              head.weight.sizes());
  TORCH_CHECK(head.lora_a.defined() == head.lora_b.defined(),
              "ChunkedLinearLoss: lora_a and lora_b come together");
  if (head.has_lora()) {
    TORCH_CHECK(head.lora_a.dim() == 2 && head.lora_a.size(1) == hidden.size(1),
                "ChunkedLinearLoss: lora_a must be [r, ", hidden.size(1), "], got ",
                head.lora_a.sizes());
    TORCH_CHECK(head.lora_b.dim() == 2 && head.lora_b.size(0) == head.weight.size(0) &&
                    head.lora_b.size(1) == head.lora_a.size(0),
                "ChunkedLinearLoss: lora_b must be [", head.weight.size(0), ", ",
                head.lora_a.size(0), "], got ", head.lora_b.sizes());
  }
  if (head.has_lora_input()) {
    TORCH_CHECK(head.has_lora(), "ChunkedLinearLoss: lora_input needs lora_a and lora_b");
    TORCH_CHECK(head.lora_input.sizes() == hidden.sizes() &&
                    head.lora_input.scalar_type() == hidden.scalar_type(),
                "ChunkedLinearLoss: lora_input must be ", hidden.scalar_type(), " ", hidden.sizes(),
                " as hidden, got ", head.lora_input.scalar_type(), " ", head.lora_input.sizes());
  }
  TORCH_CHECK(chunk_rows > 0, "ChunkedLinearLoss: chunk_rows must be positive, got ", chunk_rows);
}

}  // namespace

int64_t ResolveLossChunkRows(int64_t requested, int64_t vocab, int64_t budget_bytes) {
  if (requested > 0) return requested;
  const int64_t row_bytes = std::max<int64_t>(vocab, 1) * static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(1, budget_bytes / row_bytes);
}

int64_t FusedLossChunkRows(int64_t tokens, int64_t hidden_dim, int64_t vocab) {
  const int64_t quarter_of_hidden = tokens * hidden_dim / 4 / std::max<int64_t>(vocab, 1);
  return std::min(std::max(kFusedLossMinChunkRows, quarter_of_hidden),
                  ResolveLossChunkRows(0, vocab));
}

at::Tensor ChunkedLinearLoss(const at::Tensor& hidden, const LinearHead& head, ChunkTargets targets,
                             ChunkLossFn loss, int64_t chunk_rows) {
  CheckHeadAndRows(hidden, head, chunk_rows);
  for (size_t i = 0; i < targets.size(); ++i) {
    TORCH_CHECK(targets[i].dim() >= 1 && targets[i].size(0) == hidden.size(0),
                "ChunkedLinearLoss: targets[", i, "] must have ", hidden.size(0), " rows, got ",
                targets[i].sizes());
  }
  // Autograd's inputs must be defined tensors: without LoRA, empty placeholders stand in.
  const at::Tensor none = at::empty({0}, hidden.options());
  return ChunkedLinearLossFunction::apply(
      hidden, head.weight, head.has_lora() ? head.lora_a : none,
      head.has_lora() ? head.lora_b : none, head.has_lora_input() ? head.lora_input : none,
      c10::make_intrusive<ChunkLossHolder>(std::move(loss), std::move(targets), head.has_lora(),
                                           head.lora_scale, head.has_lora_input()),
      chunk_rows);
}

ChunkLossFn CrossEntropyChunkLoss(const CrossEntropyOptions& options) {
  return [options](const at::Tensor& logits, const ChunkTargets& targets) {
    const at::Tensor& labels = targets.at(0);
    at::Tensor loss = at::cross_entropy_loss(logits, labels, /*weight=*/{}, at::Reduction::Sum,
                                             options.ignore_index, options.label_smoothing);
    if (options.z_loss != 0.0) {
      const at::Tensor valid = labels.ne(options.ignore_index).to(logits.scalar_type());
      loss = loss + options.z_loss * (at::logsumexp(logits, -1).square() * valid).sum();
    }
    return loss;
  };
}

namespace {

// kAuto's meaning while a ScopedAutoLossPath lives.
LossPath g_auto_loss_path = LossPath::kAuto;

// The reference: the whole [N, V] logits at once, upcast to fp32 (fp64 stays fp64), and plain
// autograd through them, as transformers' LlamaForCausalLM computes its loss.
at::Tensor NaiveCrossEntropySum(const at::Tensor& hidden, const LinearHead& head,
                                const at::Tensor& labels, const CrossEntropyOptions& options) {
  const at::Tensor logits =
      ChunkLogits(hidden, head.has_lora_input() ? head.lora_input : hidden, head.weight,
                  head.lora_a, head.lora_b, head.has_lora(), head.lora_scale);
  return CrossEntropyChunkLoss(options)(logits, {labels}).to(at::kDouble);
}

}  // namespace

ScopedAutoLossPath::ScopedAutoLossPath(LossPath path) {
  g_auto_loss_path = path;
}

ScopedAutoLossPath::~ScopedAutoLossPath() {
  g_auto_loss_path = LossPath::kAuto;
}

LinearCrossEntropy ChunkedCrossEntropy(const at::Tensor& hidden, const LinearHead& head,
                                       const at::Tensor& labels, const CrossEntropyOptions& options,
                                       int64_t chunk_rows, LossPath path) {
  TORCH_CHECK(labels.dim() == 1 && labels.scalar_type() == at::kLong,
              "ChunkedCrossEntropy: labels must be int64 [tokens], got ", labels.scalar_type(), " ",
              labels.sizes());
  TORCH_CHECK(labels.size(0) == hidden.size(0), "ChunkedCrossEntropy: labels must have ",
              hidden.size(0), " rows, got ", labels.sizes());
  if (path == LossPath::kAuto) path = g_auto_loss_path;
  if (path == LossPath::kAuto) {
    // The CUDA kernel takes fp32, fp16 and bf16 logits; fp64 stays on the generic path.
    path = hidden.is_cuda() && hidden.scalar_type() != at::kDouble && !head.has_lora() &&
                   FusedLinearCrossEntropyAvailable()
               ? LossPath::kFused
               : LossPath::kGeneric;
  }
  TORCH_CHECK(chunk_rows >= 0, "ChunkedCrossEntropy: chunk_rows must be >= 0 (0: auto), got ",
              chunk_rows);
  const int64_t vocab = head.weight.dim() == 2 ? head.weight.size(0) : 1;
  // Explicit rows are the generic path's size and the fused path's upper bound.
  const int64_t generic_rows = ResolveLossChunkRows(chunk_rows, vocab);
  LinearCrossEntropy out;
  if (path == LossPath::kFused) {
    CheckHeadAndRows(hidden, head, generic_rows);
    TORCH_CHECK(!head.has_lora(), "ChunkedCrossEntropy: the fused path takes no LoRA head");
    out.sum = FusedLinearCrossEntropy(hidden, head.weight, labels, options, chunk_rows);
  } else if (path == LossPath::kNaive) {
    CheckHeadAndRows(hidden, head, generic_rows);
    out.sum = NaiveCrossEntropySum(hidden, head, labels, options);
  } else {
    out.sum =
        ChunkedLinearLoss(hidden, head, {labels}, CrossEntropyChunkLoss(options), generic_rows);
  }
  out.labels = labels;
  out.ignore_index = options.ignore_index;
  return out;
}

}  // namespace qlorad::trainer
