// CUDA implementation of linear_ce_online's device steps: two cuBLAS matmuls around the tile
// kernel, and the finishing kernel (kernels/ce_online.h), on the current stream, without
// synchronizing.
//
// The second matmul accumulates bf16/fp16 products into the fp32 acc (beta = 1), which no ATen op
// offers (addmm with out_dtype wants self in the input dtype), so both matmuls call cublasGemmEx
// on LibTorch's handle for the current stream (its workspace and math mode included). The function
// is taken from the cuBLAS that LibTorch already loaded (RTLD_NOLOAD), so this library neither
// links nor loads a second copy.
#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cublas_v2.h>
#include <dlfcn.h>
#include <torch/library.h>

#include <string>

#include "kernels/ce_online.h"
#include "kernels/torch/ce_online_ops.h"
#include "kernels/torch/logit_format.h"

namespace qlorad::ops {
namespace {

// cublasGemmEx's C signature (the header also declares C++ overloads, so decltype cannot name it).
using GemmExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                                    int, const void*, const void*, cudaDataType, int, const void*,
                                    cudaDataType, int, const void*, void*, cudaDataType, int,
                                    cublasComputeType_t, cublasGemmAlgo_t);

GemmExFn TorchCublasGemmEx() {
  static const GemmExFn fn = [] {
    const std::string soname = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_NOLOAD);
    TORCH_CHECK(lib != nullptr, "linear_ce_online: ", soname,
                " is not loaded in this process (LibTorch's CUDA build should have loaded it)");
    void* sym = dlsym(lib, "cublasGemmEx");
    TORCH_CHECK(sym != nullptr, "linear_ce_online: cublasGemmEx not found in ", soname);
    return reinterpret_cast<GemmExFn>(sym);
  }();
  return fn;
}

cudaDataType_t CudaTypeOf(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

// Row-major C[m, n] = beta * C + A[m, k] @ op(B), with op(B) = B^T for B [n, k] (transpose_b) or B
// for B [k, n]; A, B contiguous in `in_type`, C contiguous in `out_type`. cuBLAS is column-major,
// so it computes C^T = op(B)^T A^T.
void RowMajorGemm(const void* a, const void* b, void* c, int64_t m, int64_t n, int64_t k,
                  bool transpose_b, cudaDataType_t in_type, cudaDataType_t out_type, float beta) {
  const float alpha = 1.0f;
  const cublasComputeType_t compute = in_type == CUDA_R_32F && at::globalContext().allowTF32CuBLAS()
                                          ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
  const cublasStatus_t s = TorchCublasGemmEx()(
      at::cuda::getCurrentCUDABlasHandle(), transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N,
      static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b, in_type,
      static_cast<int>(transpose_b ? k : n), a, in_type, static_cast<int>(k), &beta, c, out_type,
      static_cast<int>(n), compute, CUBLAS_GEMM_DEFAULT);
  TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "linear_ce_online: cublasGemmEx failed with status ",
              std::to_string(static_cast<int>(s)), " for m=", std::to_string(m),
              " n=", std::to_string(n), " k=", std::to_string(k));
}

void TileCuda(const at::Tensor& hidden, const at::Tensor& weight_tile, const at::Tensor& labels,
              int64_t vocab_offset, bool first_tile, at::Tensor& tile, at::Tensor& state,
              at::Tensor& acc) {
  const c10::cuda::CUDAGuard guard(tile.device());
  const int64_t rows = tile.size(0), cols = tile.size(1), dim = hidden.size(1);
  const cudaDataType_t type = CudaTypeOf(hidden.scalar_type());
  RowMajorGemm(hidden.data_ptr(), weight_tile.data_ptr(), tile.data_ptr(), rows, cols, dim,
               /*transpose_b=*/true, type, type, 0.0f);
  kernels::OnlineCeTileParams p;
  p.logits = tile.data_ptr();
  p.rows = rows;
  p.cols = cols;
  p.format = LogitFormatOf(tile.scalar_type());
  p.vocab_offset = vocab_offset;
  p.first_tile = first_tile;
  p.labels = labels.data_ptr<int64_t>();
  p.state = state.data_ptr<float>();
  p.acc = acc.numel() > 0 ? acc.data_ptr<float>() : nullptr;
  p.dim = dim;
  const Status s = kernels::LaunchOnlineCeTile(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(s.ok(), "linear_ce_online: ", s.message());
  if (acc.numel() == 0) return;
  // beta = 0 on the first tile: acc is fresh memory, which cuBLAS then never reads.
  RowMajorGemm(tile.data_ptr(), weight_tile.data_ptr(), acc.data_ptr(), rows, dim, cols,
               /*transpose_b=*/false, type, CUDA_R_32F, first_tile ? 0.0f : 1.0f);
}

void FinishCuda(const at::Tensor& state, const at::Tensor& acc, const at::Tensor& labels,
                const at::Tensor& weight, const at::Tensor& colsum, int64_t ignore_index,
                double label_smoothing, double z_loss, at::Tensor& losses, at::Tensor& grad) {
  const c10::cuda::CUDAGuard guard(state.device());
  kernels::OnlineCeFinishParams p;
  p.state = state.data_ptr<float>();
  p.acc = acc.numel() > 0 ? acc.data_ptr<float>() : nullptr;
  p.rows = state.size(0);
  p.dim = weight.size(1);
  p.vocab = weight.size(0);
  p.labels = labels.data_ptr<int64_t>();
  p.weight = weight.data_ptr();
  p.weight_colsum = colsum.numel() > 0 ? colsum.data_ptr<float>() : nullptr;
  p.format = LogitFormatOf(weight.scalar_type());
  p.ignore_index = ignore_index;
  p.label_smoothing = static_cast<float>(label_smoothing);
  p.z_loss = static_cast<float>(z_loss);
  p.loss = losses.data_ptr<float>();
  p.grad = acc.numel() > 0 ? grad.data_ptr() : nullptr;
  const Status s = kernels::LaunchOnlineCeFinish(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(s.ok(), "linear_ce_online: ", s.message());
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CUDA, m) {
  m.impl("_linear_ce_online_tile_", &TileCuda);
  m.impl("_linear_ce_online_finish_", &FinishCuda);
}

}  // namespace qlorad::ops
