// Launchers of NF4 dequantization (kernels: nf4_dequant_kernels.cuh).
#include <algorithm>
#include <string>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/nf4_dequant.h"
#include "kernels/nf4_dequant_kernels.cuh"
#include "kernels/nf4_format.h"
#include "kernels/nf4_ref.h"

namespace qlorad::kernels {
namespace {

bool Aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

Status CheckParams(const NF4DequantParams& p) {
  if (p.numel < 0)
    return InvalidArgument("nf4 dequantize: numel: expected >= 0, got " + std::to_string(p.numel));
  QLORAD_RETURN_IF_ERROR(ref::CheckBlocksize(p.blocksize));
  if (p.numel == 0) return Status::Ok();
  if (p.packed == nullptr || p.out == nullptr)
    return InvalidArgument("nf4 dequantize: packed and out are required");
  if (p.double_quant && (p.absmax_codes == nullptr || p.nested_absmax == nullptr ||
                         p.nested_code == nullptr || p.offset == nullptr)) {
    return InvalidArgument(
        "nf4 dequantize: double quantization needs absmax_codes, nested_absmax, nested_code, "
        "offset");
  }
  if (!p.double_quant && p.absmax == nullptr)
    return InvalidArgument("nf4 dequantize: absmax is required");
  if (p.row_length < 0 || p.row_stride < p.row_length || (p.row_length == 0 && p.row_stride != 0))
    return InvalidArgument("nf4 dequantize: rows: expected 0 <= row_length <= row_stride, got " +
                           std::to_string(p.row_length) + " and " + std::to_string(p.row_stride));
  if (p.row_length > 0 && p.numel % p.row_length != 0) {
    return InvalidArgument("nf4 dequantize: rows: " + std::to_string(p.numel) +
                           " values are not whole rows of " + std::to_string(p.row_length));
  }
  return Status::Ok();
}

// Whether every 32-value chunk of the vector path lands whole and 16-byte aligned: always for
// rows one after another; for spaced rows, when a row holds whole chunks and starts aligned (and
// the chunks can be counted in 32 bits, as the kernel does).
bool RowsAllowVectors(const NF4DequantParams& p, size_t value_bytes) {
  if (p.row_stride == p.row_length) return true;
  return p.row_length % cuda::kElementsPerChunk == 0 &&
         (p.row_stride * static_cast<int64_t>(value_bytes)) % 16 == 0 &&
         p.numel / cuda::kElementsPerChunk < (int64_t{1} << 32);
}

int Log2(int64_t blocksize) {
  int log2 = 0;
  while ((int64_t{1} << log2) < blocksize) ++log2;
  return log2;
}

// Thread blocks for one weight: one thread per 32-element chunk (or per element on the unaligned
// path). The kernel loops grid-stride within a weight, so a huge weight is capped where more
// blocks would stop helping.
int32_t BlocksFor(const NF4DequantParams& p, bool vector) {
  const int64_t work =
      vector ? (p.numel + cuda::kElementsPerChunk - 1) / cuda::kElementsPerChunk : p.numel;
  return static_cast<int32_t>(std::clamp<int64_t>(
      (work + cuda::kDequantThreads - 1) / cuda::kDequantThreads, 1, int64_t{1} << 20));
}

template <typename OutT, bool kVector, int kCapacity>
void LaunchGroup(const NF4DequantParams* const* weights, int count, cudaStream_t stream) {
  cuda::NF4Table table;
  for (int i = 0; i < 16; ++i) table.value[i] = kNF4Code[i];
  cuda::NF4DequantGroup<kCapacity> group{};
  int32_t blocks = 0;
  for (int i = 0; i < count; ++i) {
    group.weights[i] = *weights[i];
    group.log2_blocksize[i] = Log2(weights[i]->blocksize);
    group.first_block[i] = blocks;
    blocks += BlocksFor(*weights[i], kVector);
  }
  group.first_block[count] = blocks;
  group.count = count;
  // Staging pays only with 16-byte stores, i.e. on the vector path.
  cuda::kDequantizeNF4<OutT, kVector, kVector, kCapacity>
      <<<blocks, cuda::kDequantThreads, 0, stream>>>(group, table);
}

// A single weight takes the one-slot form: a smaller parameter block to copy at launch.
template <typename OutT, bool kVector>
void LaunchSlices(const std::vector<const NF4DequantParams*>& weights, cudaStream_t stream) {
  for (size_t first = 0; first < weights.size(); first += kMaxDequantGroup) {
    const int n = static_cast<int>(std::min<size_t>(kMaxDequantGroup, weights.size() - first));
    if (n == 1) {
      LaunchGroup<OutT, kVector, 1>(&weights[first], n, stream);
    } else {
      LaunchGroup<OutT, kVector, kMaxDequantGroup>(&weights[first], n, stream);
    }
  }
}

template <typename OutT>
void LaunchFormat(const NF4DequantParams* weights, int count, FloatFormat format,
                  cudaStream_t stream) {
  std::vector<const NF4DequantParams*> vector, scalar;
  for (int i = 0; i < count; ++i) {
    const NF4DequantParams& p = weights[i];
    if (p.format != format || p.numel == 0) continue;
    const bool vectors =
        Aligned16(p.packed) && Aligned16(p.out) && RowsAllowVectors(p, sizeof(OutT));
    (vectors ? vector : scalar).push_back(&p);
  }
  if (!vector.empty()) LaunchSlices<OutT, true>(vector, stream);
  if (!scalar.empty()) LaunchSlices<OutT, false>(scalar, stream);
}

}  // namespace

Status LaunchNF4Dequantize(const NF4DequantParams& p, cudaStream_t stream) {
  return LaunchNF4DequantizeMany(&p, 1, stream);
}

Status LaunchNF4DequantizeMany(const NF4DequantParams* weights, int count, cudaStream_t stream) {
  if (count < 0 || (count > 0 && weights == nullptr))
    return InvalidArgument("nf4 dequantize: expected count >= 0 weights");
  for (int i = 0; i < count; ++i) {
    if (Status s = CheckParams(weights[i]); !s.ok()) {
      return count == 1 ? s : Status(s.code(), "weight " + std::to_string(i) + ": " + s.message());
    }
  }
  LaunchFormat<__half>(weights, count, FloatFormat::kFloat16, stream);
  LaunchFormat<__nv_bfloat16>(weights, count, FloatFormat::kBFloat16, stream);
  LaunchFormat<float>(weights, count, FloatFormat::kFloat32, stream);
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace qlorad::kernels
