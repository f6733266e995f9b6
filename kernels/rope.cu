// Launcher of the fused RoPE (kernel: rope_kernels.cuh).
#include <algorithm>
#include <climits>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/rope.h"
#include "kernels/rope_kernels.cuh"

namespace qlorad::kernels {
namespace {

Status CheckParams(const RopeParams& p) {
  if (p.batch < 0 || p.seq < 0 || p.q.heads < 0 || p.k.heads < 0) {
    return InvalidArgument("rope: expected batch, seq and heads >= 0, got " +
                           std::to_string(p.batch) + ", " + std::to_string(p.seq) + ", " +
                           std::to_string(p.q.heads) + ", " + std::to_string(p.k.heads));
  }
  if (p.head_dim <= 0 || p.head_dim % 2 != 0)
    return InvalidArgument("rope: head_dim: expected an even number > 0, got " +
                           std::to_string(p.head_dim));
  // The kernel indexes a token's units (kVec pairs of a head) with 32-bit ints.
  if ((p.q.heads + p.k.heads) * (p.head_dim / 2) > INT_MAX)
    return InvalidArgument("rope: expected fewer than 2^31 pairs per token");
  if (p.batch * p.seq == 0 || p.q.heads + p.k.heads == 0) return Status::Ok();
  if (p.q.data == nullptr || p.k.data == nullptr || p.cos == nullptr || p.sin == nullptr)
    return InvalidArgument("rope: q, k, cos and sin are required");
  if (p.table_rows <= 0) return InvalidArgument("rope: expected a table with rows");
  return Status::Ok();
}

// Whether every pack of kVec elements of T (and kVec floats of the table) starts on its own size.
template <typename T, int kVec>
bool Vectorizable(const RopeParams& p) {
  auto fits = [](const RopeHeads& x) {
    const bool source_fits =
        x.source == nullptr ||
        (cuda::PackAligned(x.source, sizeof(T) * kVec) && x.source_batch_stride % kVec == 0 &&
         x.source_seq_stride % kVec == 0 && x.source_head_stride % kVec == 0);
    return cuda::PackAligned(x.data, sizeof(T) * kVec) && x.batch_stride % kVec == 0 &&
           x.seq_stride % kVec == 0 && source_fits;
  };
  return (p.head_dim / 2) % kVec == 0 && fits(p.q) && fits(p.k) &&
         cuda::PackAligned(p.cos, sizeof(float) * kVec) &&
         cuda::PackAligned(p.sin, sizeof(float) * kVec);
}

template <typename T, int kVec>
void Launch(const RopeParams& p, cudaStream_t stream) {
  const int64_t units = (p.q.heads + p.k.heads) * (p.head_dim / 2 / kVec);
  // Whole warps, as many as the token has units (up to the cap): no idle lanes at d = 64 or 128.
  const auto threads =
      static_cast<int>(std::min<int64_t>(cuda::kRopeMaxThreads, (units + 31) / 32 * 32));
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(p.batch * p.seq, int64_t{1} << 20));
  cuda::kRope<T, kVec><<<blocks, threads, 0, stream>>>(p);
}

}  // namespace

Status LaunchRope(const RopeParams& p, cudaStream_t stream) {
  QLORAD_RETURN_IF_ERROR(CheckParams(p));
  if (p.batch * p.seq == 0 || p.q.heads + p.k.heads == 0) return Status::Ok();
  cuda::WithFloatType(p.format, [&](auto t) {
    using T = decltype(t);
    constexpr int kVec = 16 / sizeof(T);
    if (Vectorizable<T, kVec>(p)) {
      Launch<T, kVec>(p, stream);
    } else {
      Launch<T, 1>(p, stream);
    }
  });
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace qlorad::kernels
