// CUDA implementation of linear_ce_online (its steps: ce_online_steps.h): two cuBLAS matmuls around
// the tile kernel, and the finishing kernel (kernels/ce_online.h), on the current stream, without
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

#include <memory>
#include <string>

#include "kernels/ce_online.h"
#include "kernels/torch/ce_online_ops.h"
#include "kernels/torch/ce_online_steps.h"
#include "kernels/torch/float_format.h"

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

cudaDataType_t CudaTypeOf(kernels::FloatFormat format) {
  switch (format) {
    case kernels::FloatFormat::kFloat16:
      return CUDA_R_16F;
    case kernels::FloatFormat::kBFloat16:
      return CUDA_R_16BF;
    case kernels::FloatFormat::kFloat32:
      break;
  }
  return CUDA_R_32F;
}

// Row-major C[m, n] = beta * C + A[m, k] @ op(B), with op(B) = B^T for B [n, k] (transpose_b) or B
// for B [k, n]; A, B contiguous in `in_type`, C contiguous in `out_type`. cuBLAS is column-major,
// so it computes C^T = op(B)^T A^T.
void RowMajorGemm(cublasHandle_t handle, cublasComputeType_t compute, const void* a, const void* b,
                  void* c, int64_t m, int64_t n, int64_t k, bool transpose_b,
                  cudaDataType_t in_type, cudaDataType_t out_type, float beta) {
  const float alpha = 1.0f;
  const cublasStatus_t s = TorchCublasGemmEx()(
      handle, transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n),
      static_cast<int>(m), static_cast<int>(k), &alpha, b, in_type,
      static_cast<int>(transpose_b ? k : n), a, in_type, static_cast<int>(k), &beta, c, out_type,
      static_cast<int>(n), compute, CUBLAS_GEMM_DEFAULT);
  TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "linear_ce_online: cublasGemmEx failed with status ",
              std::to_string(static_cast<int>(s)), " for m=", std::to_string(m),
              " n=", std::to_string(n), " k=", std::to_string(k));
}

// Everything a tile needs that does not change within a call, looked up once: LibTorch's cuBLAS
// handle (bound to the current stream and its workspace), the compute type (TF32 only if torch
// allows it for fp32), raw pointers and the kernels' parameters.
class CudaSteps final : public detail::OnlineCeSteps {
 public:
  explicit CudaSteps(const detail::OnlineCeBuffers& b)
      : guard_(b.hidden.device()),
        stream_(c10::cuda::getCurrentCUDAStream()),
        handle_(at::cuda::getCurrentCUDABlasHandle()),
        format_(FloatFormatOf(b.hidden.scalar_type(), "linear_ce_online", "hidden")),
        type_(CudaTypeOf(format_)),
        compute_(type_ == CUDA_R_32F && at::globalContext().allowTF32CuBLAS()
                     ? CUBLAS_COMPUTE_32F_FAST_TF32
                     : CUBLAS_COMPUTE_32F),
        elem_(b.hidden.element_size()),
        dim_(b.hidden.size(1)),
        hidden_(static_cast<const char*>(b.hidden.data_ptr())),
        weight_(static_cast<const char*>(b.weight.data_ptr())),
        labels_(b.labels.data_ptr<int64_t>()),
        acc_(b.acc.numel() > 0 ? b.acc.data_ptr<float>() : nullptr),
        losses_(b.losses.data_ptr<float>()),
        grad_(b.acc.numel() > 0 ? static_cast<char*>(b.grad.data_ptr()) : nullptr) {
    tile_.logits = b.tile.data_ptr();
    tile_.format = format_;
    tile_.state = b.state.data_ptr<float>();
    tile_.acc = acc_;
    tile_.dim = dim_;
    finish_.state = tile_.state;
    finish_.acc = acc_;
    finish_.dim = dim_;
    finish_.vocab = b.weight.size(0);
    finish_.weight = weight_;
    finish_.weight_colsum =
        b.weight_colsum.numel() > 0 ? b.weight_colsum.data_ptr<float>() : nullptr;
    finish_.format = format_;
    finish_.ignore_index = b.options.ignore_index;
    finish_.label_smoothing = static_cast<float>(b.options.label_smoothing);
    finish_.z_loss = static_cast<float>(b.options.z_loss);
  }

  void Tile(int64_t start, int64_t rows, int64_t v0, int64_t cols) override {
    const char* h = hidden_ + start * dim_ * elem_;
    const char* w = weight_ + v0 * dim_ * elem_;
    RowMajorGemm(handle_, compute_, h, w, tile_.logits, rows, cols, dim_, /*transpose_b=*/true,
                 type_, type_, 0.0f);
    tile_.rows = rows;
    tile_.cols = cols;
    tile_.vocab_offset = v0;
    tile_.first_tile = v0 == 0;
    tile_.labels = labels_ + start;
    const Status s = kernels::LaunchOnlineCeTile(tile_, stream_);
    TORCH_CHECK(s.ok(), "linear_ce_online: ", s.message());
    if (acc_ == nullptr) return;
    // beta = 0 on the first tile: acc holds the previous chunk's values, which cuBLAS then never
    // reads.
    RowMajorGemm(handle_, compute_, tile_.logits, w, acc_, rows, dim_, cols,
                 /*transpose_b=*/false, type_, CUDA_R_32F, v0 == 0 ? 0.0f : 1.0f);
  }

  void Finish(int64_t start, int64_t rows) override {
    finish_.rows = rows;
    finish_.labels = labels_ + start;
    finish_.loss = losses_ + start;
    finish_.grad = grad_ != nullptr ? grad_ + start * dim_ * elem_ : nullptr;
    const Status s = kernels::LaunchOnlineCeFinish(finish_, stream_);
    TORCH_CHECK(s.ok(), "linear_ce_online: ", s.message());
  }

 private:
  const c10::cuda::CUDAGuard guard_;
  const cudaStream_t stream_;
  const cublasHandle_t handle_;
  const kernels::FloatFormat format_;
  const cudaDataType_t type_;
  const cublasComputeType_t compute_;
  const int64_t elem_, dim_;
  const char* const hidden_;
  const char* const weight_;
  const int64_t* const labels_;
  float* const acc_;
  float* const losses_;
  char* const grad_;
  kernels::OnlineCeTileParams tile_;
  kernels::OnlineCeFinishParams finish_;
};

std::unique_ptr<detail::OnlineCeSteps> MakeCudaSteps(const detail::OnlineCeBuffers& b) {
  return std::make_unique<CudaSteps>(b);
}

}  // namespace

TORCH_LIBRARY_IMPL(qlorad, CUDA, m) {
  m.impl("linear_ce_online", &detail::LinearCeOnlineWith<&MakeCudaSteps>);
}

}  // namespace qlorad::ops
