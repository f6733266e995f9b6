// The fast path of the chunked cross-entropy (chunked_loss.h). All of it runs in forward (no
// recompute), so backward only scales the stored gradients by the upstream one.
//  - Frozen W (QLoRA's lm_head): qlorad::linear_ce_online (kernels/torch/ce_online_ops.h) walks the
//    vocabulary in tiles with an online softmax and never holds a [rows, V] buffer.
//  - Trainable W (a tied embedding, an unfrozen head), whose gradient needs each logit's final
//    softmax: per chunk of rows, logits = hidden @ W^T in the activation dtype, then one kernel
//    (qlorad::ce_loss_grad_, kernels/ce_loss.h) writes each row's loss and, over the logits in
//    place, d(loss)/d(logits); two matmuls turn that into the chunk's gradient of hidden and of W.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "worker/trainer/loss/chunked_loss.h"

namespace qlorad::trainer {

// Whether this build has the kernel (the trainer links the kernels' operator library).
bool FusedLinearCrossEntropyAvailable();

// Sum over rows of the cross-entropy, an fp64 scalar differentiable with respect to hidden [N, d]
// and weight [V, d] (each only if it requires grad). Same value and gradients as the generic path
// with CrossEntropyChunkLoss(options), within the precision of the inputs. chunk_rows 0: each
// path's own sizes (FusedLossChunkRows; the online kernel's OnlineCeTilingFor); else an upper
// bound on the rows per chunk.
at::Tensor FusedLinearCrossEntropy(const at::Tensor& hidden, const at::Tensor& weight,
                                   const at::Tensor& labels, const CrossEntropyOptions& options,
                                   int64_t chunk_rows);

}  // namespace qlorad::trainer
