// The fast path of the chunked cross-entropy (chunked_loss.h): per chunk of rows, logits =
// hidden @ W^T in the activation dtype, then one kernel (qlorad::ce_loss_grad_, kernels/ce_loss.h)
// writes each row's loss and, over the logits in place, d(loss)/d(logits); two matmuls turn that
// into the chunk's gradient of hidden and of W. All of it runs in forward (no recompute), so
// backward only scales the stored gradients by the upstream one.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "worker/trainer/chunked_loss.h"

namespace qlorad::trainer {

// Whether this build has the kernel (the trainer links the kernels' operator library).
bool FusedLinearCrossEntropyAvailable();

// Sum over rows of the cross-entropy, an fp64 scalar differentiable with respect to hidden [N, d]
// and weight [V, d] (each only if it requires grad). Same value and gradients as the generic path
// with CrossEntropyChunkLoss(options), within the precision of the inputs.
at::Tensor FusedLinearCrossEntropy(const at::Tensor& hidden, const at::Tensor& weight,
                                   const at::Tensor& labels, const CrossEntropyOptions& options,
                                   int64_t chunk_rows);

}  // namespace qlorad::trainer
