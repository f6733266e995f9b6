// Launchers of NF4 dequantization (kernels: nf4_dequant_kernels.cuh).
#include <algorithm>
#include <string>

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
  return Status::Ok();
}

template <typename OutT>
void Launch(const NF4DequantParams& p, bool vector, cudaStream_t stream) {
  cuda::NF4Table table;
  for (int i = 0; i < 16; ++i) table.value[i] = kNF4Code[i];
  int log2_blocksize = 0;
  while ((int64_t{1} << log2_blocksize) < p.blocksize) ++log2_blocksize;
  // One thread per 32-element chunk (or per element on the unaligned path); the kernels loop
  // grid-stride, so the grid is capped where a launch would stop helping.
  const int64_t work =
      vector ? (p.numel + cuda::kElementsPerChunk - 1) / cuda::kElementsPerChunk : p.numel;
  const int64_t blocks =
      std::min<int64_t>((work + cuda::kDequantThreads - 1) / cuda::kDequantThreads, 1 << 20);
  const dim3 grid(static_cast<unsigned>(std::max<int64_t>(blocks, 1)));
  if (vector) {
    cuda::kDequantizeNF4<OutT, true, true>
        <<<grid, cuda::kDequantThreads, 0, stream>>>(p, table, log2_blocksize);
  } else {
    cuda::kDequantizeNF4<OutT, false, false>
        <<<grid, cuda::kDequantThreads, 0, stream>>>(p, table, log2_blocksize);
  }
}

}  // namespace

Status LaunchNF4Dequantize(const NF4DequantParams& p, cudaStream_t stream) {
  QLORAD_RETURN_IF_ERROR(CheckParams(p));
  if (p.numel == 0) return Status::Ok();
  const bool vector = Aligned16(p.packed) && Aligned16(p.out);
  switch (p.format) {
    case OutFormat::kFloat16:
      Launch<__half>(p, vector, stream);
      break;
    case OutFormat::kBFloat16:
      Launch<__nv_bfloat16>(p, vector, stream);
      break;
    case OutFormat::kFloat32:
      Launch<float>(p, vector, stream);
      break;
  }
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace qlorad::kernels
