// The sizes of a Llama-family model that decide its memory, read from a Hugging Face config.json.
// Torch-free, so the coordinator reads it too (server/scheduler.h places jobs by the memory
// estimate, common/memory_estimate.h). The trainer's own parser (worker/trainer/model/
// model_config.h) validates far more (rope, activation, model type); this one reads the sizes
// only, with the same defaults, and tests/unit/trainer/model/model_shape_parity_test.cc holds
// the two to the same numbers.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace qlorad {

struct ModelShape {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  bool tie_word_embeddings = false;  // as the trainer reads it: absent is false

  bool operator==(const ModelShape&) const = default;
};

// `source` names the file in errors ("/models/x/config.json: hidden_size: ...").
StatusOr<ModelShape> ParseModelShape(const std::string& json_text, const std::string& source);
// <model_dir>/config.json; NOT_FOUND when the file cannot be opened.
StatusOr<ModelShape> ReadModelShape(const std::string& model_dir);

}  // namespace qlorad
