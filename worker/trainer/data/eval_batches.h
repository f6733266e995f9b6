// The micro-batches one evaluation runs, and which rank runs each: the validation rows in their
// fixed order (no shuffle), micro_batch_size rows a batch, the first train.eval_batches of them
// (all when unset). Batch i belongs to rank i mod world_size, so the ranks together evaluate
// exactly the batches one rank would. Every rank runs the same number of forwards (fsdp gathers
// are collectives): a rank left without a batch repeats one with weight zero.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "worker/trainer/data/batcher.h"

namespace qlorad::trainer {

struct EvalShape {
  int64_t micro_batch_size = 1;
  std::optional<int64_t> max_batches = std::nullopt;  // train.eval_batches
  int rank = 0;
  int world_size = 1;
};

struct EvalBatch {
  Batch batch;
  bool counts = true;  // false: a filler forward, its loss and tokens left out
};

// Draws from the start of `batcher`'s epoch 0 (it must not shuffle) and leaves it there.
std::vector<EvalBatch> DrawEvalBatches(Batcher& batcher, const EvalShape& shape);

}  // namespace qlorad::trainer
