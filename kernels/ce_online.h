// Online (flash-style) linear + cross-entropy for a frozen lm_head: the two kernels between the
// matmuls of qlorad::linear_ce_online (kernels/torch/ce_online_ops.h). For a chunk of rows, the
// vocabulary is walked in tiles of columns; per tile
//   S = h @ W_tile^T                      (a matmul, the activation dtype)
//   kOnlineCeTile: per row, fold the tile into the row's state and overwrite S with
//                  P = exp(S - m)         (m: the row's running reference max)
//   acc += P @ W_tile                     (a matmul, fp32 accumulator [rows, d])
// and at the end kOnlineCeFinish turns each row's state and acc into its loss and its gradient
//   d(loss)/d(h) = (1 + 2 z lse) * acc / l - (1 - eps) * W[t] - (eps / V) * sum_v W[v]
// (acc / l = sum_v softmax_v W[v]: attention of h over keys = values = W, which is why the logits
// never need to exist whole). Loss formula and label rules: kernels/ce_loss.h.
//
// Row state, 4 floats: m, l = sum exp(x - m) over the tiles seen, x_t (the label's logit, NaN until
// its tile is seen), sum of the logits. m only moves when a tile's max exceeds it by more than
// kOnlineCeMaxLag; then the row's l and acc are rescaled by exp(m_old - m_new). Between moves every
// P <= exp(kOnlineCeMaxLag) and the row's largest P so far is >= 1, so neither overflows nor
// vanishes, and the rescale (a pass over the row of acc) is rare after the first tile.
// Torch-free: raw pointers, sizes and a stream; kernels in ce_online_kernels.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/status.h"
#include "kernels/ce_loss.h"
#include "kernels/ce_online_format.h"
#include "kernels/float_format.h"

namespace qlorad::kernels {

struct OnlineCeTileParams {
  void* logits = nullptr;  // [rows, cols] of `format`, contiguous; read, then overwritten with P
  int64_t rows = 0;
  int64_t cols = 0;
  FloatFormat format = FloatFormat::kFloat32;
  int64_t vocab_offset = 0;         // the tile's first vocabulary index
  bool first_tile = false;          // initialises the state instead of reading it
  const int64_t* labels = nullptr;  // [rows]
  float* state = nullptr;           // [rows, kOnlineCeStateWidth]
  float* acc = nullptr;             // [rows, dim] fp32, rescaled with m; null: no gradient wanted
  int64_t dim = 0;
};

struct OnlineCeFinishParams {
  const float* state = nullptr;  // [rows, kOnlineCeStateWidth]
  const float* acc = nullptr;    // [rows, dim]; null: losses only
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t vocab = 0;
  const int64_t* labels = nullptr;       // [rows]
  const void* weight = nullptr;          // [vocab, dim] of `format`, contiguous
  const float* weight_colsum = nullptr;  // [dim], sum over the vocabulary; needed iff eps != 0
  FloatFormat format = FloatFormat::kFloat32;
  int64_t ignore_index = -100;
  float label_smoothing = 0.0f;
  float z_loss = 0.0f;
  float* loss = nullptr;  // [rows]
  void* grad = nullptr;   // [rows, dim] of `format`, contiguous; written iff acc is given
};

// Enqueue on `stream`; never synchronize and allocate nothing.
Status LaunchOnlineCeTile(const OnlineCeTileParams& p, cudaStream_t stream);
Status LaunchOnlineCeFinish(const OnlineCeFinishParams& p, cudaStream_t stream);

}  // namespace qlorad::kernels
