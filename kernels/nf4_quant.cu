// Launchers of NF4 quantization (kernels: nf4_quant_kernels.cuh).
#include <algorithm>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/nf4_format.h"
#include "kernels/nf4_quant.h"
#include "kernels/nf4_quant_kernels.cuh"
#include "kernels/nf4_ref.h"

namespace qlorad::kernels {
namespace {

dim3 GridFor(int64_t warps) {
  const int64_t blocks = (warps + cuda::kWarpsPerQuantBlock - 1) / cuda::kWarpsPerQuantBlock;
  return dim3(static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, 1 << 20)));
}

}  // namespace

Status LaunchNF4Quantize(const void* weight, FloatFormat format, int64_t numel, int64_t blocksize,
                         uint8_t* packed, float* absmax, unsigned long long* first_non_finite,
                         cudaStream_t stream) {
  QLORAD_RETURN_IF_ERROR(ref::CheckBlocksize(blocksize));
  if (numel < 0)
    return InvalidArgument("nf4 quantize: numel: expected >= 0, got " + std::to_string(numel));
  if (numel == 0) return Status::Ok();
  if (weight == nullptr || packed == nullptr || absmax == nullptr || first_non_finite == nullptr) {
    return InvalidArgument(
        "nf4 quantize: weight, packed, absmax and first_non_finite are required");
  }
  cuda::NF4Thresholds thresholds;
  for (int k = 0; k < 15; ++k) thresholds.value[k] = kNF4Thresholds[k];
  const dim3 grid = GridFor((numel + blocksize - 1) / blocksize);
  switch (format) {
    case FloatFormat::kFloat32:
      cuda::kQuantizeNF4<<<grid, cuda::kQuantThreads, 0, stream>>>(
          static_cast<const float*>(weight), numel, blocksize, packed, absmax, first_non_finite,
          thresholds);
      break;
    case FloatFormat::kFloat16:
      cuda::kQuantizeNF4<<<grid, cuda::kQuantThreads, 0, stream>>>(
          static_cast<const __half*>(weight), numel, blocksize, packed, absmax, first_non_finite,
          thresholds);
      break;
    case FloatFormat::kBFloat16:
      cuda::kQuantizeNF4<<<grid, cuda::kQuantThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(weight), numel, blocksize, packed, absmax,
          first_non_finite, thresholds);
      break;
  }
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

Status LaunchDoubleQuantizeAbsmax(const float* absmax, int64_t n_blocks, const float* offset,
                                  const float* code, uint8_t* codes, float* nested_absmax,
                                  cudaStream_t stream) {
  if (n_blocks < 0) return InvalidArgument("nf4 double quantize: n_blocks: expected >= 0");
  if (n_blocks == 0) return Status::Ok();
  if (absmax == nullptr || offset == nullptr || code == nullptr || codes == nullptr ||
      nested_absmax == nullptr) {
    return InvalidArgument(
        "nf4 double quantize: absmax, offset, code, codes and nested_absmax are required");
  }
  const dim3 grid = GridFor((n_blocks + kNestedBlocksize - 1) / kNestedBlocksize);
  cuda::kDoubleQuantizeAbsmax<<<grid, cuda::kQuantThreads, 0, stream>>>(absmax, n_blocks, offset,
                                                                        code, codes, nested_absmax);
  QLORAD_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace qlorad::kernels
