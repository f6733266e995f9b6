// `qlorad-train classify`: a base model with a classification adapter (task: classification's
// output, or any PEFT SEQ_CLS LoRA adapter whose head is `score`) on labelled examples: each
// example's logits over the labels from the score head at its last token (as
// LlamaForSequenceClassification pools an unpadded example), the mean cross-entropy and the
// accuracy, fp32 on the CPU: the numbers transformers + peft give for the same weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

struct ClassifyOptions {
  std::string model_dir;
  std::string adapter_dir;
  std::string data_path;
  // The label field of the records; empty: the adapter's labels.json names it. Without a
  // labels.json (a PEFT-made adapter) the labels are "0".."N-1".
  std::string label_field;
};

struct ClassifyResult {
  std::vector<std::string> labels;          // class index -> label
  std::vector<std::vector<double>> logits;  // one row of num_labels per example, in file order
  std::vector<int64_t> targets;             // each example's class index
  std::vector<int64_t> predictions;         // each example's argmax
  double loss = 0;                          // mean cross-entropy over the examples
  double accuracy = 0;
};

StatusOr<ClassifyResult> Classify(const ClassifyOptions& options);

}  // namespace qlorad::trainer
