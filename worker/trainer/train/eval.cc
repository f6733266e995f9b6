#include "worker/trainer/train/eval.h"

#include <torch/torch.h>

#include "worker/trainer/data/dataset.h"
#include "worker/trainer/runtime/dtype_names.h"
#include "worker/trainer/train/inference_model.h"

namespace qlorad::trainer {

StatusOr<EvalResult> Evaluate(const EvalOptions& options) {
  if (options.device == "cuda" && !torch::cuda::is_available()) {
    return FailedPrecondition("--device: cuda requested but no CUDA device is visible");
  }
  const at::Device device = options.device == "cuda" ? at::Device(at::kCUDA, 0) : at::kCPU;
  // Logits are upcast to fp32 before the loss whatever the precision, as transformers does.
  QLORAD_ASSIGN_OR_RETURN(const at::ScalarType dtype,
                          ParsePrecision(options.precision, "--precision"));
  QLORAD_ASSIGN_OR_RETURN(const LlamaConfig config, LoadLlamaConfig(options.model_dir));
  DataSpec data;
  data.path = options.data_path;
  // Text and chat records are encoded with the model's own tokenizer.json, as in training.
  QLORAD_ASSIGN_OR_RETURN(const Dataset dataset,
                          LoadDataset(data, options.model_dir, {config.vocab_size}));
  QLORAD_ASSIGN_OR_RETURN(
      LlamaModel model,
      LoadModelForInference(options.model_dir, options.adapter_dir, device, dtype));
  at::NoGradGuard no_grad;
  EvalResult result;
  double total = 0;
  int64_t tokens = 0;
  for (const Document& doc : dataset.documents) {
    const std::vector<double>& losses =
        result.per_token_loss.emplace_back(DocumentTokenLosses(model, doc, device));
    for (double v : losses) total += v;
    tokens += static_cast<int64_t>(losses.size());
  }
  result.mean_loss = tokens > 0 ? total / static_cast<double>(tokens) : 0.0;
  return result;
}

std::vector<double> DocumentTokenLosses(LlamaModel model, const Document& doc, at::Device device) {
  const int64_t length = static_cast<int64_t>(doc.input_ids.size());
  if (length < 2) return {};
  at::Tensor ids = at::tensor(doc.input_ids, at::kLong).view({1, length}).to(device);
  at::Tensor targets = at::tensor(doc.labels, at::kLong).slice(0, 1).to(device);
  at::Tensor logits = model->Logits(model->forward(ids)[0].slice(0, 0, length - 1));
  at::Tensor loss =
      at::cross_entropy_loss(logits, targets, /*weight=*/{}, at::Reduction::None, kIgnoreLabel);
  at::Tensor kept = loss.masked_select(targets != kIgnoreLabel).to(at::kDouble).cpu();
  return {kept.data_ptr<double>(), kept.data_ptr<double>() + kept.numel()};
}

}  // namespace qlorad::trainer
