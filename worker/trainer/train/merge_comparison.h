// How far apart the two merges of an adapter are (merge_base.h: into the dequantized NF4 base or
// into the original 16-bit one), so a user can choose: the merged weights tensor by tensor, and
// the per-token losses of both on the first examples of a dataset.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/train/merge_base.h"

namespace qlorad::trainer {

struct CompareOptions {
  std::string model_dir;
  std::optional<std::string> adapter_dir;
  MergeBase base;                // where the original weights are, how to quantize
  std::optional<DataSpec> data;  // none: the weights only
  int64_t max_examples = 8;      // the first examples of `data`
};

struct TensorDifference {
  std::string name;  // Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight
  double max_abs = 0;
  double mean_abs = 0;
  int64_t numel = 0;
};

struct MergeComparison {
  // Tensors whose two merges differ, in checkpoint order; `identical` counts the others
  // (embedding, norms: quantization leaves them alone).
  std::vector<TensorDifference> tensors;
  int64_t identical = 0;
  double max_abs = 0;   // over every element of `tensors`
  double mean_abs = 0;  // the mean over those elements
  // Per-token losses (nats) of the first `examples` examples, both models with the adapter on
  // (a merged model computes the same up to fp32 rounding): their largest and mean absolute
  // difference over `tokens` tokens, and each model's mean loss.
  int64_t examples = 0;
  int64_t tokens = 0;
  double loss_max_abs = 0;
  double loss_mean_abs = 0;
  double nf4_mean_loss = 0;
  double original_mean_loss = 0;
};

// Holds both bases in fp32 on the CPU at once (the NF4 one packed).
StatusOr<MergeComparison> CompareMerges(const CompareOptions& options);

}  // namespace qlorad::trainer
