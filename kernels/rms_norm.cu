// Launchers of the fused RMSNorm (kernels: rms_norm_kernels.cuh).
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "kernels/cuda_check.h"
#include "kernels/rms_norm.h"
#include "kernels/rms_norm_kernels.cuh"

namespace qlorad::kernels {
namespace {

// Threads a row's block grows to before a thread takes more packs: with Llama's rows (2048-8192
// values) a block of 256 threads with 1-4 packs each keeps several 16-byte loads in flight per
// thread, and many blocks on each SM.
constexpr int kTargetThreads = 256;

Status CheckSizes(const char* what, int64_t rows, int64_t hidden) {
  if (rows < 0 || hidden <= 0) {
    return InvalidArgument(std::string(what) + ": expected rows >= 0 and hidden > 0, got " +
                           std::to_string(rows) + " and " + std::to_string(hidden));
  }
  // One block per row: gridDim.x is at most 2^31 - 1.
  if (rows > INT32_MAX) {
    return InvalidArgument(std::string(what) + ": at most 2^31-1 rows per launch, got " +
                           std::to_string(rows));
  }
  return Status::Ok();
}

bool Aligned16(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers) {
    if (!cuda::PackAligned(p, 16)) return false;
  }
  return true;
}

// A row stride of y or dy: 0 (rows back to back) or at least hidden.
Status CheckRowStride(const char* what, int64_t stride, int64_t hidden) {
  if (stride == 0 || stride >= hidden) return Status::Ok();
  return InvalidArgument(std::string(what) + ": expected 0 or >= hidden (" +
                         std::to_string(hidden) + "), got " + std::to_string(stride));
}

// Whether rows that far apart all start 16-byte aligned, as packs need (0: back to back, where
// the row length decides, as for every other tensor).
bool RowsAligned16(int64_t stride, FloatFormat format) {
  return (stride * FloatFormatBytes(format)) % 16 == 0;
}

int RoundUpToWarps(int64_t threads) {
  return static_cast<int>((threads + 31) / 32 * 32);
}

// The block of a row of n_packs: the fewest cached packs a thread that keep the block within
// kTargetThreads, else the most packs within kRmsMaxThreads, else (cached = 0) the reading loop.
struct RowBlock {
  int threads = cuda::kRmsMaxThreads;
  int cached = 0;
};

RowBlock BlockFor(int64_t n_packs) {
  for (int cached = 1; cached <= cuda::kRmsMaxCachedPacks; cached *= 2) {
    const int64_t threads = RoundUpToWarps((n_packs + cached - 1) / cached);
    const int64_t limit =
        cached == cuda::kRmsMaxCachedPacks ? cuda::kRmsMaxThreads : kTargetThreads;
    if (threads <= limit) return {static_cast<int>(threads), cached};
  }
  return {};
}

// Calls launch(std::integral_constant<int, kCached>{}) with kCached = block.cached.
template <typename F>
void WithCached(const RowBlock& block, F&& launch) {
  switch (block.cached) {
    case 1:
      launch(std::integral_constant<int, 1>{});
      break;
    case 2:
      launch(std::integral_constant<int, 2>{});
      break;
    case 4:
      launch(std::integral_constant<int, 4>{});
      break;
    case 8:
      launch(std::integral_constant<int, 8>{});
      break;
    default:
      launch(std::integral_constant<int, 0>{});
      break;
  }
}

// The kernels of each direction, as kernel<T, kVec, kCached> for LaunchRows.
struct ForwardKernels {
  template <typename T, int kVec, int kCached>
  static constexpr auto Get() {
    return cuda::kRmsNormForward<T, kVec, kCached>;
  }
};
struct BackwardKernels {
  template <typename T, int kVec, int kCached>
  static constexpr auto Get() {
    return cuda::kRmsNormBackward<T, kVec, kCached>;
  }
};

// One block per row: 16-byte packs when the row is whole packs and every pointer is 16-byte
// aligned (torch's allocations are; a view with an odd offset may not be), else single values.
template <typename Kernels, typename T, typename Params>
void LaunchRows(const Params& p, bool aligned, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const auto blocks = static_cast<unsigned>(p.rows);
  if (aligned && p.hidden % kVec == 0) {
    const RowBlock block = BlockFor(p.hidden / kVec);
    WithCached(block, [&](auto cached) {
      Kernels::template Get<T, kVec,
                            decltype(cached)::value>()<<<blocks, block.threads, 0, stream>>>(p);
    });
  } else {
    const int threads = RoundUpToWarps(std::min<int64_t>(cuda::kRmsMaxThreads, p.hidden));
    Kernels::template Get<T, 1, 0>()<<<blocks, threads, 0, stream>>>(p);
  }
}

}  // namespace

Status LaunchRmsNormForward(const RmsNormForwardParams& p, cudaStream_t stream) {
  QLORAD_RETURN_IF_ERROR(CheckSizes("rms_norm", p.rows, p.hidden));
  if (p.rows == 0) return Status::Ok();
  if (p.x == nullptr || p.weight == nullptr || p.y == nullptr || p.inv_rms == nullptr ||
      (p.residual != nullptr && p.h == nullptr)) {
    return InvalidArgument("rms_norm: x, weight, y, inv_rms (and h with a residual) are required");
  }
  QLORAD_RETURN_IF_ERROR(CheckRowStride("rms_norm: y_row_stride", p.y_row_stride, p.hidden));
  const bool aligned =
      Aligned16({p.x, p.residual, p.h, p.weight, p.y}) && RowsAligned16(p.y_row_stride, p.format);
  cuda::WithFloatType(p.format,
                      [&](auto t) { LaunchRows<ForwardKernels, decltype(t)>(p, aligned, stream); });
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

Status LaunchRmsNormBackward(const RmsNormBackwardParams& p, cudaStream_t stream) {
  QLORAD_RETURN_IF_ERROR(CheckSizes("rms_norm_backward", p.rows, p.hidden));
  if (p.rows == 0) return Status::Ok();
  if (p.dy == nullptr || p.x == nullptr || p.weight == nullptr || p.inv_rms == nullptr ||
      p.dx == nullptr) {
    return InvalidArgument("rms_norm_backward: dy, x, weight, inv_rms and dx are required");
  }
  QLORAD_RETURN_IF_ERROR(
      CheckRowStride("rms_norm_backward: dy_row_stride", p.dy_row_stride, p.hidden));
  const bool aligned = Aligned16({p.dy, p.x, p.weight, p.dresidual, p.dx}) &&
                       RowsAligned16(p.dy_row_stride, p.format);
  cuda::WithFloatType(
      p.format, [&](auto t) { LaunchRows<BackwardKernels, decltype(t)>(p, aligned, stream); });
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace qlorad::kernels
