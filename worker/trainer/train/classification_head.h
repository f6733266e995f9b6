// task: classification's head: Hugging Face's LlamaForSequenceClassification `score`, a bias-free
// linear [num_labels, hidden] over the final (normed) hidden state of each example's last token,
// trained whole next to the LoRA adapters (what PEFT's SEQ_CLS task does: `score` in
// modules_to_save). The batches carry the class as the only valid label of each row, at that last
// token (data/class_labels.h), so the loss is cross-entropy of score(hidden) at the positions
// whose label is not -100: logits of every position are [tokens, num_labels], too small to be
// worth selecting the rows first, and selecting them would make the host wait for the device.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

struct ClassificationHead {
  at::Tensor weight;                // [num_labels, hidden], fp32, requires grad
  std::vector<std::string> labels;  // class index -> label
};

// `score.weight` of `model_dir`'s weights when it holds one (a sequence-classification
// checkpoint's head: its shape must be [labels, hidden]); else drawn from N(0, initializer_range)
// (config.json, default 0.02, as transformers initializes a new head) with a CPU generator seeded
// by `seed`, so the CPU and the GPU start alike.
StatusOr<ClassificationHead> MakeClassificationHead(const std::string& model_dir, int64_t hidden,
                                                    std::vector<std::string> labels, uint64_t seed,
                                                    at::Device device);

// A classification adapter's trained head (`base_model.model.score.weight`, fp32 on the CPU) with
// its labels from the adapter's labels.json (a PEFT-made adapter has none: "0".."N-1"), and the
// records' label field: `label_field` when given, else labels.json's (empty when neither names
// one). Errors name the file.
struct AdapterHead {
  ClassificationHead head;
  std::string label_field;
};
StatusOr<AdapterHead> ReadAdapterHead(const std::string& adapter_dir,
                                      const std::string& label_field = "");

// The head's logits of `hidden` [..., hidden] in fp32: [..., num_labels].
at::Tensor ClassLogits(const ClassificationHead& head, const at::Tensor& hidden);

struct ClassificationSums {
  at::Tensor loss;     // summed cross-entropy of the labelled rows ([], fp32, with grad)
  at::Tensor correct;  // how many of them the argmax gets right ([], int64)
};

// Over the rows of `hidden` [N, hidden] whose `labels` [N] entry is not -100.
ClassificationSums ClassifyRows(const ClassificationHead& head, const at::Tensor& hidden,
                                const at::Tensor& labels);

}  // namespace qlorad::trainer
