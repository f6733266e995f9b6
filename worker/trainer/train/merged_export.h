// `qlorad-train export`: a base model with its LoRA adapter merged in (W + scale * B @ A, into the
// dequantized NF4 base or the original 16-bit one: merge_base.h), written as a plain Hugging Face
// checkpoint that transformers loads without peft: config.json (quantization_config dropped,
// dtype set), the tokenizer and generation files copied, and safetensors sharded with a
// model.safetensors.index.json when the weights exceed one shard. A classification adapter makes
// a sequence-classification model (classification_export.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/trainer/train/merge_base.h"

namespace qlorad::trainer {

struct ExportOptions {
  std::string model_dir;
  std::optional<std::string> adapter_dir;  // none: the base alone (e.g. a bnb checkpoint dense)
  std::string out_dir;
  // bf16 | fp16 | fp32; empty: the base checkpoint's (config.json dtype or torch_dtype; for a
  // bitsandbytes checkpoint that is its compute dtype), fp32 when it names none, as transformers.
  std::string dtype;
  int64_t max_shard_bytes = 5'000'000'000;
  MergeBase merge;  // into the dequantized NF4 weights (default) or the original 16-bit ones
};

struct ExportResult {
  int64_t tensors = 0;
  int64_t merged_layers = 0;
  int64_t shards = 0;
  int64_t total_bytes = 0;
  int64_t num_labels =
      0;  // a classification adapter's: the model is <Arch>ForSequenceClassification
  std::vector<std::string> notes;  // what a user of the output should know, for the log
};

StatusOr<ExportResult> ExportMerged(const ExportOptions& options);

}  // namespace qlorad::trainer
