// What one optimizer step trains on, for one rank of a data-parallel job: every rank draws the
// whole global batch (micro_batch_size x grad_accum x world_size rows, in the order one rank would
// draw them) and keeps micro-batch i * world_size + rank, so N ranks train on exactly the rows of
// one; drawing is cheap next to the model.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/trainer/data/batcher.h"

namespace qlorad::trainer {

struct StepShape {
  int64_t micro_batch_size = 1;
  int64_t grad_accum = 1;
  int rank = 0;
  int world_size = 1;
};

struct StepBatches {
  std::vector<Batch> mine;  // this rank's micro-batches, in order
  // Over every rank's micro-batches: the valid labels are what the loss divides by, on every rank
  // alike, with no collective and nothing read back from the device.
  int64_t global_valid = 0;
  int64_t global_tokens = 0;
  // The batcher's position once this step is drawn: what a checkpoint taken after training this
  // step records, however far ahead the batcher has been drawn since (batch_prefetcher.h).
  DataPosition after;
};

StepBatches DrawStepBatches(Batcher& batcher, const StepShape& shape);

}  // namespace qlorad::trainer
