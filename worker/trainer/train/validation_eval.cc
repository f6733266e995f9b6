#include "worker/trainer/train/validation_eval.h"

#include <vector>

#include "worker/trainer/loss/chunked_loss.h"
#include "worker/trainer/train/loss_head.h"

namespace qlorad::trainer {

namespace {

// Sets the model to eval mode for its lifetime, then back to what it was, on every path out.
class EvalModeScope {
 public:
  explicit EvalModeScope(LlamaModel& model) : model_(model), was_training_(model->is_training()) {
    model_->eval();
  }
  ~EvalModeScope() { model_->train(was_training_); }
  EvalModeScope(const EvalModeScope&) = delete;
  EvalModeScope& operator=(const EvalModeScope&) = delete;

 private:
  LlamaModel& model_;
  const bool was_training_;
};

// The summed loss of one batch's trained tokens (fp32 math, as training's) and, for
// classification, how many rows it classifies right: [2] fp64 on the device.
at::Tensor BatchSums(Session& s, const Batch& b) {
  const auto on_device = [&](const std::vector<int64_t>& v) {
    return at::tensor(v, at::kLong).to(s.device);
  };
  const at::Tensor inputs = on_device(b.inputs).view({b.rows, b.seq_len});
  at::Tensor positions, cu_seqlens;
  if (b.packed_documents) {  // as the training batches: block-diagonal attention per document
    positions = on_device(b.positions).view({b.rows, b.seq_len});
    cu_seqlens = on_device(b.document_offsets).to(at::kInt);
  }
  const at::Tensor hidden = s.model->forward(inputs, positions, cu_seqlens);
  const at::Tensor flat = hidden.reshape({-1, hidden.size(-1)});
  const at::Tensor labels = on_device(b.labels);
  if (s.classifier) {
    const ClassificationSums sums = ClassifyRows(*s.classifier, flat, labels);
    return at::stack({sums.loss.to(at::kDouble), sums.correct.to(at::kDouble)});
  }
  const at::Tensor loss = ChunkedCrossEntropy(flat, LossHeadOf(s.model), labels,
                                              {.ignore_index = kIgnoreLabel}, s.loss_chunk_rows)
                              .sum.to(at::kDouble)
                              .reshape({1});
  return at::cat({loss, at::zeros_like(loss)});
}

}  // namespace

StatusOr<ValidationLoss> EvaluateValidation(Session& s, Batcher& validation,
                                            const EvalShape& shape) {
  const std::vector<EvalBatch> batches = DrawEvalBatches(validation, shape);
  EvalModeScope eval_mode(s.model);
  at::NoGradGuard no_grad;
  at::Tensor sums = at::zeros({2}, at::TensorOptions().dtype(at::kDouble).device(s.device));
  int64_t tokens = 0;
  for (const EvalBatch& b : batches) {
    // A filler batch still runs: under fsdp every rank must join every layer's gather.
    const at::Tensor sum = BatchSums(s, b.batch);
    if (!b.counts) continue;
    sums += sum;
    tokens += b.batch.valid_labels;
  }
  // [loss sum, correct rows, tokens]
  at::Tensor totals = at::cat({sums, at::full({1}, static_cast<double>(tokens), sums.options())});
  QLORAD_RETURN_IF_ERROR(s.comm->AllReduceSum(totals)->Wait());
  const at::Tensor host = totals.cpu();
  ValidationLoss out;
  out.tokens = static_cast<int64_t>(host[2].item<double>());
  if (out.tokens == 0) {
    return InvalidArgument(
        "data.validation: no trained token in the evaluated batches (every label is -100); "
        "check train_on_completions_only or train.eval_batches");
  }
  out.loss = host[0].item<double>() / static_cast<double>(out.tokens);
  if (s.classifier) out.accuracy = host[1].item<double>() / static_cast<double>(out.tokens);
  return out;
}

}  // namespace qlorad::trainer
