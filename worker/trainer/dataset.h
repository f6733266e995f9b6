// Reads a JSONL training file into token documents. Each line is {"input_ids": [...]} with optional
// "labels" (same length, -100 = not trained on), or {"text": "..."} for the byte-level tokenizer.
// A bad line is an INVALID_ARGUMENT naming the file and the 1-based line number.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"

namespace qlorad::trainer {

inline constexpr int64_t kIgnoreLabel = -100;

struct Document {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;  // aligned with input_ids (HF convention: the model shifts)
};

struct Dataset {
  std::vector<Document> documents;
  int64_t skipped_lines = 0;  // bad lines dropped because data.skip_bad_lines is set
};

// Ids must be in [0, vocab_size). An empty dataset is an error naming data.path.
StatusOr<Dataset> LoadJsonlDataset(const DataSpec& spec, int64_t vocab_size);

}  // namespace qlorad::trainer
