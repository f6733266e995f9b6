// Launcher of the fused cross-entropy (kernels: ce_loss_kernels.cuh).
#include <string>

#include "kernels/ce_loss.h"
#include "kernels/ce_loss_kernels.cuh"
#include "kernels/cuda_check.h"

namespace qlorad::kernels {
namespace {

Status CheckParams(const CrossEntropyParams& p) {
  if (p.rows < 0 || p.vocab <= 0 || p.row_stride < p.vocab) {
    return InvalidArgument(
        "cross-entropy: expected rows >= 0, vocab > 0, row_stride >= vocab; got " +
        std::to_string(p.rows) + ", " + std::to_string(p.vocab) + ", " +
        std::to_string(p.row_stride));
  }
  if (p.rows > INT32_MAX) {
    return InvalidArgument("cross-entropy: at most 2^31-1 rows per launch, got " +
                           std::to_string(p.rows));
  }
  if (p.rows > 0 && (p.logits == nullptr || p.labels == nullptr || p.loss == nullptr))
    return InvalidArgument("cross-entropy: logits, labels and loss are required");
  return Status::Ok();
}

template <typename T>
void Launch(const CrossEntropyParams& p, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  // 16-byte packs need every row to start on a 16-byte boundary and to hold whole packs.
  const bool packed = reinterpret_cast<uintptr_t>(p.logits) % 16 == 0 && p.vocab % kVec == 0 &&
                      p.row_stride % kVec == 0;
  const auto blocks = static_cast<unsigned>(p.rows);
  if (packed) {
    cuda::kCrossEntropyLossGrad<T, kVec><<<blocks, cuda::kCeThreads, 0, stream>>>(p);
  } else {
    cuda::kCrossEntropyLossGrad<T, 1><<<blocks, cuda::kCeThreads, 0, stream>>>(p);
  }
}

}  // namespace

Status LaunchCrossEntropyLossGrad(const CrossEntropyParams& p, cudaStream_t stream) {
  QLORAD_RETURN_IF_ERROR(CheckParams(p));
  if (p.rows == 0) return Status::Ok();
  cuda::WithFloatType(p.format, [&](auto t) { Launch<decltype(t)>(p, stream); });
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace qlorad::kernels
