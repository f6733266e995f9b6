// Launchers of the online linear + cross-entropy kernels (kernels: ce_online_kernels.cuh).
#include <string>

#include "kernels/ce_online.h"
#include "kernels/ce_online_kernels.cuh"
#include "kernels/cuda_check.h"

namespace qlorad::kernels {
namespace {

Status CheckRows(int64_t rows, const char* what) {
  if (rows < 0 || rows > INT32_MAX) {
    return InvalidArgument(std::string(what) + ": expected 0 <= rows < 2^31, got " +
                           std::to_string(rows));
  }
  return Status::Ok();
}

template <typename T>
void LaunchTile(const OnlineCeTileParams& p, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  // 16-byte packs need every row to start on a 16-byte boundary and to hold whole packs.
  const bool packed = reinterpret_cast<uintptr_t>(p.logits) % 16 == 0 && p.cols % kVec == 0;
  const auto blocks = static_cast<unsigned>(p.rows);
  if (packed) {
    cuda::kOnlineCeTile<T, kVec><<<blocks, cuda::kOnlineThreads, 0, stream>>>(p);
  } else {
    cuda::kOnlineCeTile<T, 1><<<blocks, cuda::kOnlineThreads, 0, stream>>>(p);
  }
}

template <typename T>
void LaunchFinish(const OnlineCeFinishParams& p, cudaStream_t stream) {
  cuda::kOnlineCeFinish<T><<<static_cast<unsigned>(p.rows), cuda::kOnlineThreads, 0, stream>>>(p);
}

}  // namespace

Status LaunchOnlineCeTile(const OnlineCeTileParams& p, cudaStream_t stream) {
  QLORAD_RETURN_IF_ERROR(CheckRows(p.rows, "online cross-entropy tile"));
  if (p.cols <= 0 || p.vocab_offset < 0 || (p.acc != nullptr && p.dim <= 0)) {
    return InvalidArgument(
        "online cross-entropy tile: expected cols > 0, vocab_offset >= 0 and, "
        "with acc, dim > 0; got " +
        std::to_string(p.cols) + ", " + std::to_string(p.vocab_offset) + ", " +
        std::to_string(p.dim));
  }
  if (p.rows == 0) return Status::Ok();
  if (p.logits == nullptr || p.labels == nullptr || p.state == nullptr)
    return InvalidArgument("online cross-entropy tile: logits, labels and state are required");
  cuda::WithFloatType(p.format, [&](auto t) { LaunchTile<decltype(t)>(p, stream); });
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

Status LaunchOnlineCeFinish(const OnlineCeFinishParams& p, cudaStream_t stream) {
  QLORAD_RETURN_IF_ERROR(CheckRows(p.rows, "online cross-entropy finish"));
  if (p.vocab <= 0 || (p.acc != nullptr && p.dim <= 0)) {
    return InvalidArgument(
        "online cross-entropy finish: expected vocab > 0 and, with acc, dim > 0; got " +
        std::to_string(p.vocab) + ", " + std::to_string(p.dim));
  }
  if (p.rows == 0) return Status::Ok();
  if (p.state == nullptr || p.labels == nullptr || p.loss == nullptr)
    return InvalidArgument("online cross-entropy finish: state, labels and loss are required");
  if (p.acc != nullptr && (p.weight == nullptr || p.grad == nullptr ||
                           (p.label_smoothing != 0.0f && p.weight_colsum == nullptr))) {
    return InvalidArgument(
        "online cross-entropy finish: a gradient needs weight, grad and, with label smoothing, "
        "the weight's column sums");
  }
  cuda::WithFloatType(p.format, [&](auto t) { LaunchFinish<decltype(t)>(p, stream); });
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace qlorad::kernels
