// Some rows of a micro-batch, as one forward takes them. A step that ran out of memory is run
// again in pieces of fewer rows (trainer.cc): the same rows and the same loss divisor, so the
// same gradients up to the order of their summation, in less memory.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "worker/trainer/train/batch_prefetcher.h"

namespace qlorad::trainer {

struct ForwardRows {
  at::Tensor inputs;      // [rows, seq_len]
  at::Tensor labels;      // [rows * seq_len]
  at::Tensor positions;   // [rows, seq_len], or undefined as in the micro-batch
  at::Tensor cu_seqlens;  // int32 document bounds of these rows; defined with positions
};

// Rows [begin, begin + rows) of `b`: views of its tensors, and (packed rows) the bounds of their
// documents, cut from b.document_offsets on the host and copied without waiting. All of b's rows
// are b's own tensors.
ForwardRows RowsOf(const DeviceMicroBatch& b, int64_t begin, int64_t rows);

}  // namespace qlorad::trainer
