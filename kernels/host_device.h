// QLORAD_HOST_DEVICE marks the small inline formulas that the CPU references and the CUDA kernels
// share, so that both evaluate one source text: __host__ __device__ under nvcc, nothing elsewhere
// (the references build without CUDA).
#pragma once

#if defined(__CUDACC__)
#define QLORAD_HOST_DEVICE __host__ __device__
#else
#define QLORAD_HOST_DEVICE
#endif
