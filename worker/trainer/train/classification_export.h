// What `export` (--format hf) makes of a classification adapter (task: classification's, or a
// PEFT SEQ_CLS LoRA adapter whose head is `score`): Hugging Face's <Arch>ForSequenceClassification,
// which AutoModelForSequenceClassification.from_pretrained loads without peft. Its weights are the
// merged causal model's without lm_head, plus the adapter's `score.weight`; its config.json is the
// base's with the architecture, the labels and a pad token:
// - architectures: LlamaForSequenceClassification (llama), MistralForSequenceClassification
//   (mistral), Qwen2ForSequenceClassification (qwen2);
// - num_labels, id2label and label2id from the adapter's labels.json (else "0".."N-1");
//   problem_type single_label_classification (cross-entropy, as training used);
// - pad_token_id: the base's when set, else its eos_token_id, else null. transformers pools the
//   logits of each row's last token that is not pad_token_id; training and `classify` pool each
//   example's last token, so the two agree on every example that does not end with that token (a
//   tokenized example ends where its text does, with no EOS appended). With null (a model that
//   names neither, like make-tiny-model's) transformers pools the last token, as we do, but
//   refuses batches of more than one row; the export says so.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

// The merged sequence-classification model's config.json, from the base's `config` (read from
// `config_path`, which errors name) and the head's labels in class order.
StatusOr<nlohmann::json> SequenceClassificationConfig(nlohmann::json config,
                                                      const std::vector<std::string>& labels,
                                                      const std::string& config_path);

}  // namespace qlorad::trainer
