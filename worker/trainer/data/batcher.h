// Turns documents into fixed-size micro-batches of next-token rows, epoch after epoch, in an order
// that depends only on data.seed. Its position (epoch, row) is part of a checkpoint, so a resumed
// run sees exactly the rows the interrupted one would have seen.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "worker/trainer/data/dataset.h"

namespace qlorad::trainer {

struct DataPosition {
  int64_t epoch = 0;
  int64_t row = 0;  // next row of that epoch
};

// Row-major [rows, seq_len]; rows shorter than seq_len are padded (labels kIgnoreLabel).
struct Batch {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int64_t> inputs;
  std::vector<int64_t> labels;  // already shifted: labels[t] is the target for inputs[t]
  // Each token's position in its document: 0 where a (piece of a) document starts in the row, so a
  // packed row restarts its rotary positions per document. Padding continues the last document.
  std::vector<int64_t> positions;
  // Some row holds several documents: attention must then be block-diagonal causal (each token
  // sees only its own document), which the model derives from `positions`.
  bool packed_documents = false;
  // With packed_documents: where each document starts in the flattened [rows * seq_len] tokens
  // (position 0, and every row's first token), then rows * seq_len. Flash attention's
  // variable-length kernels take these bounds (cu_seqlens); computed here, on the host, a step
  // never reads the positions back from the device to find them. Empty otherwise.
  std::vector<int64_t> document_offsets;
  int64_t valid_labels = 0;  // labels that are not kIgnoreLabel
  int64_t tokens = 0;        // real (non-padding) input tokens
};

struct BatcherOptions {
  int64_t max_seq_len = 2048;
  bool packing = true;
  bool shuffle = true;
  uint64_t seed = 0;
};

class Batcher {
 public:
  // Fails when no row would have a single token to predict (e.g. only one-token documents).
  static StatusOr<Batcher> Create(std::vector<Document> documents, const BatcherOptions& options);

  Batch Next(int64_t rows);
  DataPosition position() const { return position_; }
  void Seek(const DataPosition& position);
  int64_t rows_per_epoch() const { return static_cast<int64_t>(rows_.size()); }

 private:
  struct Row {
    std::vector<int64_t> inputs;
    std::vector<int64_t> labels;
    std::vector<int64_t> positions;
  };
  Batcher(std::vector<Document> documents, const BatcherOptions& options);
  void BuildEpoch(int64_t epoch);

  std::vector<Document> documents_;
  BatcherOptions options_;
  std::vector<Row> rows_;  // rows of position_.epoch
  DataPosition position_;
};

}  // namespace qlorad::trainer
