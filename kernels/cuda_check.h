// Error handling shared by the CUDA launchers: a failed CUDA call becomes a Status that names the
// call, the file and the line (STYLE habit 9: the GPU layer reports where it failed).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "common/status.h"

namespace qlorad::kernels {

inline Status CudaStatus(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return Status::Ok();
  return Internal(std::string(what) + " failed at " + file + ":" + std::to_string(line) + ": " +
                  cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

}  // namespace qlorad::kernels

#define QLORAD_CUDA_RETURN_IF_ERROR(expr) \
  QLORAD_RETURN_IF_ERROR(::qlorad::kernels::CudaStatus((expr), #expr, __FILE__, __LINE__))
