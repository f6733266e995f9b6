#include "worker/trainer/train/micro_batch_rows.h"

#include <vector>

#include "worker/trainer/runtime/host_staging.h"

namespace qlorad::trainer {

ForwardRows RowsOf(const DeviceMicroBatch& b, int64_t begin, int64_t rows) {
  const int64_t all_rows = b.inputs.size(0);
  TORCH_CHECK(begin >= 0 && rows > 0 && begin + rows <= all_rows, "RowsOf: rows [", begin, ", ",
              begin + rows, ") of a micro-batch of ", all_rows);
  if (begin == 0 && rows == all_rows) return {b.inputs, b.labels, b.positions, b.cu_seqlens};
  const int64_t seq_len = b.inputs.size(1);
  ForwardRows piece;
  piece.inputs = b.inputs.narrow(0, begin, rows);
  piece.labels = b.labels.narrow(0, begin * seq_len, rows * seq_len);
  if (!b.positions.defined()) return piece;
  piece.positions = b.positions.narrow(0, begin, rows);
  // Every row's first token starts a document (batcher.h), so the rows' documents are the bounds
  // in [first, end), shifted to start at 0, then the end.
  const int64_t first = begin * seq_len;
  const int64_t end = first + rows * seq_len;
  std::vector<int32_t> bounds;
  for (const int64_t offset : b.document_offsets) {
    if (offset >= first && offset < end) bounds.push_back(static_cast<int32_t>(offset - first));
  }
  bounds.push_back(static_cast<int32_t>(end - first));
  const at::Tensor host = at::tensor(bounds, at::TensorOptions().dtype(at::kInt));
  piece.cu_seqlens = CopyToDeviceAsync(host, b.inputs.device());
  return piece;
}

}  // namespace qlorad::trainer
