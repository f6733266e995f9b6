// Per-token evaluation of a model (optionally with a PEFT adapter) on a JSONL dataset: the loss
// of every trained target token of every example, the numbers transformers gives for the same
// weights, so parity with Hugging Face can be checked token by token.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/trainer/data/dataset.h"
#include "worker/trainer/model/llama_model.h"

namespace qlorad::trainer {

struct EvalOptions {
  std::string model_dir;
  std::optional<std::string> adapter_dir;
  std::string data_path;
  std::string device = "cpu";      // cpu | cuda
  std::string precision = "fp32";  // fp32 | bf16 | fp16: the weights and activations
};

struct EvalResult {
  // One list per example: the cross-entropy (nats) of each position t whose label t+1 is not
  // -100, predicting that label (HF's shift), in order.
  std::vector<std::vector<double>> per_token_loss;
  double mean_loss = 0;  // over every token of every example
};

StatusOr<EvalResult> Evaluate(const EvalOptions& options);

// One example's entry of EvalResult::per_token_loss (call under no-grad, model in eval mode).
std::vector<double> DocumentTokenLosses(LlamaModel model, const Document& doc, at::Device device);

}  // namespace qlorad::trainer
