// Launchers of the fused SwiGLU (kernels: swiglu_kernels.cuh).
#include <algorithm>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/swiglu.h"
#include "kernels/swiglu_kernels.cuh"

namespace qlorad::kernels {
namespace {

Status CheckParams(const SwigluParams& p, bool backward) {
  if (p.rows < 0 || p.cols < 0) {
    return InvalidArgument("swiglu: expected rows and cols >= 0, got " + std::to_string(p.rows) +
                           ", " + std::to_string(p.cols));
  }
  if (p.rows * p.cols == 0) return Status::Ok();
  if (!backward && p.h_out != nullptr) return InvalidArgument("swiglu: h_out is for backward only");
  if (p.out_stride != 0 && (backward || p.out_stride < p.cols)) {
    return InvalidArgument(backward ? "swiglu backward: out_stride is for forward only"
                                    : "swiglu: expected out_stride 0 or >= cols " +
                                          std::to_string(p.cols) + ", got " +
                                          std::to_string(p.out_stride));
  }
  if (p.gate == nullptr || p.up == nullptr || p.out == nullptr || (backward && p.dh == nullptr))
    return InvalidArgument(backward ? "swiglu backward: dh, gate, up and out are required"
                                    : "swiglu: gate, up and out are required");
  return Status::Ok();
}

// Whether every pack of kVec elements starts on its own size: in every input row and in both
// halves of dgu's rows (which start cols elements apart).
template <typename T, int kVec>
bool Vectorizable(const SwigluParams& p, bool backward) {
  constexpr size_t kBytes = sizeof(T) * kVec;
  bool ok = p.cols % kVec == 0 && cuda::PackAligned(p.out, kBytes) &&
            cuda::PackAligned(p.gate, kBytes) && cuda::PackAligned(p.up, kBytes) &&
            p.gate_stride % kVec == 0 && p.up_stride % kVec == 0 && p.out_stride % kVec == 0;
  if (backward) ok = ok && cuda::PackAligned(p.dh, kBytes) && p.dh_stride % kVec == 0;
  if (p.h_out != nullptr) ok = ok && cuda::PackAligned(p.h_out, kBytes);
  return ok;
}

template <typename T, int kVec>
void Launch(const SwigluParams& p, bool backward, cudaStream_t stream) {
  const int64_t packs = (p.cols + kVec - 1) / kVec;
  // Rows beyond the grid's y limit are walked by the threads (grid-stride over rows).
  const dim3 grid(static_cast<unsigned>((packs + cuda::kSwigluThreads - 1) / cuda::kSwigluThreads),
                  static_cast<unsigned>(std::min<int64_t>(p.rows, 65535)));
  if (backward) {
    cuda::kSwigluBackward<T, kVec><<<grid, cuda::kSwigluThreads, 0, stream>>>(p);
  } else {
    cuda::kSwigluForward<T, kVec><<<grid, cuda::kSwigluThreads, 0, stream>>>(p);
  }
}

Status LaunchSwiglu(const SwigluParams& p, bool backward, cudaStream_t stream) {
  QLORAD_RETURN_IF_ERROR(CheckParams(p, backward));
  if (p.rows * p.cols == 0) return Status::Ok();
  cuda::WithFloatType(p.format, [&](auto t) {
    using T = decltype(t);
    constexpr int kVec = 16 / sizeof(T);
    if (Vectorizable<T, kVec>(p, backward)) {
      Launch<T, kVec>(p, backward, stream);
    } else {
      Launch<T, 1>(p, backward, stream);
    }
  });
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace

Status LaunchSwigluForward(const SwigluParams& p, cudaStream_t stream) {
  return LaunchSwiglu(p, /*backward=*/false, stream);
}

Status LaunchSwigluBackward(const SwigluParams& p, cudaStream_t stream) {
  return LaunchSwiglu(p, /*backward=*/true, stream);
}

}  // namespace qlorad::kernels
