#include "worker/trainer/data/eval_batches.h"

#include <algorithm>

namespace qlorad::trainer {

std::vector<EvalBatch> DrawEvalBatches(Batcher& batcher, const EvalShape& shape) {
  batcher.Seek({0, 0});
  const int64_t rows = batcher.rows_per_epoch();
  int64_t batches = (rows + shape.micro_batch_size - 1) / shape.micro_batch_size;
  if (shape.max_batches) batches = std::min(batches, *shape.max_batches);
  std::vector<EvalBatch> mine;
  for (int64_t i = 0; i < batches; ++i) {
    // The last batch holds the rows that are left: no row is evaluated twice.
    Batch b = batcher.Next(std::min(shape.micro_batch_size, rows - i * shape.micro_batch_size));
    if (i % shape.world_size == shape.rank) mine.push_back({std::move(b), true});
  }
  const int64_t per_rank = (batches + shape.world_size - 1) / shape.world_size;
  while (static_cast<int64_t>(mine.size()) < per_rank) {
    // Only the last round can leave a rank out; batch 0 exists whenever a round does.
    batcher.Seek({0, 0});
    mine.push_back({batcher.Next(std::min(shape.micro_batch_size, rows)), false});
  }
  batcher.Seek({0, 0});
  return mine;
}

}  // namespace qlorad::trainer
