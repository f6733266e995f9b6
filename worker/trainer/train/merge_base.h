// Which base weights `export` merges a LoRA adapter into. A QLoRA adapter was trained against the
// dequantized NF4 weights, so merging into those (the default) gives a model that computes what
// training saw; merging into the original 16-bit weights gives back the precision quantization
// took away, but adds each weight's quantization error to what the adapter learned. Which is
// better depends on the model and the adapter, so `export` can merge either way and compare them
// (merge_comparison.h).
#pragma once

#include <optional>
#include <string>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/model/llama_model.h"

namespace qlorad::trainer {

enum class MergeInto {
  kNf4,       // the dequantized NF4 weights: a bitsandbytes 4-bit model directory as stored, or a
              // 16-bit one quantized as training quantized it (`quantization`)
  kOriginal,  // the 16-bit weights: `original_dir`, else the model directory when it holds them
};

struct MergeBase {
  MergeInto into = MergeInto::kNf4;
  // The original 16-bit Hugging Face directory, needed for kOriginal (or to compare) when the
  // model directory is a bitsandbytes 4-bit checkpoint.
  std::optional<std::string> original_dir;
  // How a 16-bit model directory is quantized for kNf4: the job's quantization section (type nf4;
  // block size and double quantization change the dequantized values).
  QuantizationSpec quantization;
};

// "nf4" | "original"; anything else is an error naming `field`.
StatusOr<MergeInto> ParseMergeInto(const std::string& name, const std::string& field);
const char* MergeIntoName(MergeInto into);

// The base model of `model_dir` as `into` asks, in fp32 on the CPU, with the adapter applied
// (not merged) when there is one. `task`: the adapter's (a classification adapter's score head
// is left to the caller). Errors name --merge-into or --original.
StatusOr<LlamaModel> LoadMergeBase(const std::string& model_dir,
                                   const std::optional<std::string>& adapter_dir,
                                   const MergeBase& base, MergeInto into,
                                   Task task = Task::kCausalLm);

}  // namespace qlorad::trainer
