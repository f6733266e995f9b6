// GPU tests of the NF4 CUDA kernels through the qlorad ops: CUDA results must equal the CPU
// reference bit for bit (quantize bytes, absmax, nested state, dequantized fp16/bf16/fp32), on odd
// sizes, every blocksize, unaligned pointers and the NF4-challenge shapes; the out= form must
// allocate nothing and be capturable in a CUDA graph. Skipped where no GPU is present.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "kernels/nf4_dynamic_map.h"
#include "kernels/nf4_ref.h"
#include "kernels/torch/nf4_ops.h"

namespace qlorad::ops {
namespace {

class NF4Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

at::Tensor RandomWeight(std::vector<int64_t> shape, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  return (at::randn(shape) * 0.02).to(dtype);
}

void ExpectBitEqual(const at::Tensor& gpu, const at::Tensor& cpu, const std::string& what) {
  const at::Tensor g = gpu.cpu().contiguous().view(at::kByte);
  const at::Tensor c = cpu.contiguous().view(at::kByte);
  ASSERT_EQ(g.numel(), c.numel()) << what;
  const int64_t mismatches = g.ne(c).sum().item<int64_t>();
  EXPECT_EQ(mismatches, 0) << what << ": " << mismatches << " differing bytes";
}

TEST_F(NF4Cuda, QuantizeEqualsTheReference) {
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (int64_t blocksize : {32, 64, 256, 4096}) {
      for (int64_t n : {1, 63, 65, 64 * 257 + 31}) {
        const std::string what = std::string(c10::toString(dtype)) +
                                 " bs=" + std::to_string(blocksize) + " n=" + std::to_string(n);
        const at::Tensor w = RandomWeight({n}, dtype, static_cast<uint64_t>(n));
        const NF4Weight cpu = QuantizeNF4(w, blocksize, /*double_quant=*/false);
        const NF4Weight gpu = QuantizeNF4(w.cuda(), blocksize, /*double_quant=*/false);
        ExpectBitEqual(gpu.packed, cpu.packed, what + " packed");
        ExpectBitEqual(gpu.absmax, cpu.absmax, what + " absmax");

        // Double quantization from the GPU's own offset (torch's CUDA mean may differ from the CPU
        // mean in the last bit; bitsandbytes uses the CUDA one).
        const NF4Weight dq = QuantizeNF4(w.cuda(), blocksize, /*double_quant=*/true);
        ExpectBitEqual(dq.packed, cpu.packed, what + " packed (double quant)");
        const int64_t n_blocks = cpu.absmax.numel();
        const float offset = dq.offset.item<float>();
        std::vector<uint8_t> codes(n_blocks);
        std::vector<float> nested(kernels::ref::NumBlocks(n_blocks, 256));
        kernels::ref::DoubleQuantizeAbsmax(cpu.absmax.data_ptr<float>(), n_blocks, offset,
                                           kernels::kDynamicMapSigned, codes.data(), nested.data());
        ExpectBitEqual(dq.absmax, at::from_blob(codes.data(), {n_blocks}, at::kByte),
                       what + " codes");
        ExpectBitEqual(dq.nested_absmax,
                       at::from_blob(nested.data(), {static_cast<int64_t>(nested.size())}),
                       what + " nested_absmax");
      }
    }
  }
}

TEST_F(NF4Cuda, DequantizeEqualsTheReferenceInEveryFormat) {
  for (bool double_quant : {true, false}) {
    for (int64_t blocksize : {32, 64, 128, 4096}) {
      for (int64_t n : {1, 2, 31, 33, 63, 65, 1000001}) {
        const NF4Weight cpu =
            QuantizeNF4(RandomWeight({n}, at::kFloat, 7), blocksize, double_quant);
        const NF4Weight gpu = cpu.to(at::Device(at::kCUDA));
        for (at::ScalarType dtype : {at::kHalf, at::kBFloat16, at::kFloat}) {
          ExpectBitEqual(DequantizeNF4(gpu, dtype), DequantizeNF4(cpu, dtype),
                         std::string(c10::toString(dtype)) + " dq=" + std::to_string(double_quant) +
                             " bs=" + std::to_string(blocksize) + " n=" + std::to_string(n));
        }
      }
    }
  }
}

TEST_F(NF4Cuda, ChallengeShapesEqualTheReference) {
  struct Shape {
    int64_t rows, cols;
    at::ScalarType dtype;
  };
  for (const Shape& s : {Shape{8192, 2048, at::kHalf}, Shape{2048, 8192, at::kHalf},
                         Shape{4096, 1024, at::kBFloat16}, Shape{1024, 4096, at::kBFloat16},
                         Shape{14336, 4096, at::kBFloat16}, Shape{4096, 14336, at::kBFloat16}}) {
    const at::Tensor w = RandomWeight({s.rows, s.cols}, s.dtype, 11);
    const NF4Weight gpu = QuantizeNF4(w.cuda());
    const NF4Weight cpu = gpu.to(at::Device(at::kCPU));
    ExpectBitEqual(DequantizeNF4(gpu, s.dtype), DequantizeNF4(cpu, s.dtype),
                   std::to_string(s.rows) + "x" + std::to_string(s.cols));
  }
}

TEST_F(NF4Cuda, UnalignedPointersTakeTheScalarPathAndStayExact) {
  const int64_t n = 64 * 100 + 7;
  const NF4Weight cpu = QuantizeNF4(RandomWeight({n}, at::kFloat, 13));
  NF4Weight gpu = cpu.to(at::Device(at::kCUDA));
  at::Tensor shifted = at::empty({gpu.packed.numel() + 1}, gpu.packed.options());
  shifted.slice(0, 1).copy_(gpu.packed);
  gpu.packed = shifted.slice(0, 1);  // 1 byte past a 16-byte boundary
  at::Tensor out_buffer = at::empty({n + 1}, gpu.packed.options().dtype(at::kHalf));
  at::Tensor out = out_buffer.slice(0, 1);  // 2 bytes past a 16-byte boundary
  DequantizeNF4Out(gpu, out);
  ExpectBitEqual(out, DequantizeNF4(cpu, at::kHalf), "unaligned");
}

TEST_F(NF4Cuda, OutFormAllocatesNothingAndCapturesInACudaGraph) {
  const NF4Weight w = QuantizeNF4(RandomWeight({4096, 1024}, at::kBFloat16, 17).cuda());
  at::Tensor out = at::empty({4096, 1024}, w.packed.options().dtype(at::kBFloat16));
  DequantizeNF4Out(w, out);  // warm-up
  const int device = w.packed.get_device();
  const auto before = c10::cuda::CUDACachingAllocator::getDeviceStats(device).num_alloc_retries;
  const auto allocated_before = c10::cuda::CUDACachingAllocator::getDeviceStats(device)
                                    .allocation[0]
                                    .allocated;  // cumulative count
  DequantizeNF4Out(w, out);
  EXPECT_EQ(c10::cuda::CUDACachingAllocator::getDeviceStats(device).allocation[0].allocated,
            allocated_before);
  EXPECT_EQ(c10::cuda::CUDACachingAllocator::getDeviceStats(device).num_alloc_retries, before);

  // Capture on a side stream (capture fails on a synchronizing call), then replay into a cleared
  // out.
  const at::Tensor expected = out.clone();
  auto stream = c10::cuda::getStreamFromPool();
  at::cuda::CUDAGraph graph;
  {
    c10::cuda::CUDAStreamGuard guard(stream);
    graph.capture_begin();
    DequantizeNF4Out(w, out);
    graph.capture_end();
  }
  out.zero_();
  graph.replay();
  torch::cuda::synchronize();
  ExpectBitEqual(out, expected.cpu(), "graph replay");
}

TEST_F(NF4Cuda, DeterministicOnRerun) {
  const NF4Weight w = QuantizeNF4(RandomWeight({333, 777}, at::kHalf, 19).cuda());
  EXPECT_TRUE(at::equal(DequantizeNF4(w, at::kHalf), DequantizeNF4(w, at::kHalf)));
  const NF4Weight again = QuantizeNF4(RandomWeight({333, 777}, at::kHalf, 19).cuda());
  EXPECT_TRUE(at::equal(w.packed, again.packed));
  EXPECT_TRUE(at::equal(w.absmax, again.absmax));
}

// Expects quantizing `w` to fail with a message containing `needle`.
void ExpectQuantizeError(const at::Tensor& w, const std::string& needle) {
  try {
    QuantizeNF4(w);
    ADD_FAILURE() << "expected an error containing " << needle;
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find(needle), std::string::npos)
        << e.what_without_backtrace();
  }
}

TEST_F(NF4Cuda, NonFiniteWeightIsAnErrorNamingTheFirstSuchElement) {
  at::Tensor w = RandomWeight({100000}, at::kBFloat16, 23).cuda();
  w[70001] = std::numeric_limits<float>::quiet_NaN();
  ExpectQuantizeError(w, "qlorad::nf4_quantize: weight: element 70001 is NaN");
  w[321] = -std::numeric_limits<float>::infinity();
  ExpectQuantizeError(w, "element 321 is infinite");
  // The same weight on the CPU names the same element.
  ExpectQuantizeError(w.cpu(), "element 321 is infinite");
}

// The grouped launch must give each weight exactly what its own launch gives: mixed formats
// (one launch each), more weights than one launch holds, an unaligned one, an empty one.
TEST_F(NF4Cuda, ManyEqualsOneAtATimeAcrossFormatsAndGroups) {
  std::vector<NF4Weight> weights;
  std::vector<at::Tensor> outs;
  const at::ScalarType dtypes[] = {at::kHalf, at::kBFloat16, at::kFloat};
  for (int i = 0; i < 37; ++i) {
    const int64_t n = (i % 5 == 0) ? 64 * 1024 + 31 : 1 + 97 * i;
    const bool double_quant = i % 7 != 3;
    weights.push_back(QuantizeNF4(RandomWeight({n}, at::kFloat, 100 + i).cuda(), 64, double_quant));
    outs.push_back(at::full({n}, 3.0, at::TensorOptions().dtype(dtypes[i % 3]).device(at::kCUDA)));
  }
  // An unaligned out (the scalar path) and an empty weight ride along.
  at::Tensor unaligned_storage =
      at::zeros({weights[4].numel() + 1}, at::TensorOptions().dtype(at::kHalf).device(at::kCUDA));
  outs[4] = unaligned_storage.narrow(0, 1, weights[4].numel());
  weights.push_back(QuantizeNF4(at::empty({0}, at::kFloat).cuda(), 64, true));
  outs.push_back(at::empty({0}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA)));

  std::vector<const NF4Weight*> pointers;
  for (const NF4Weight& w : weights) pointers.push_back(&w);
  DequantizeNF4ManyOut(pointers, outs);
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor expected = DequantizeNF4(weights[i], outs[i].scalar_type());
    ExpectBitEqual(outs[i], expected.cpu(), "weight " + std::to_string(i));
  }
}

// Rows spaced wider than their length (the first columns of a wider matrix, where the LoRA path
// puts B beside the frozen weight): every value lands in its row's place and the columns after
// each row keep what they held. Vector path (rows of whole 32-value chunks, aligned), scalar path
// (rows of 63 values; an odd spacing), every format, and in one grouped launch with dense outs.
TEST_F(NF4Cuda, SpacedRowsEqualTheReferenceAndLeaveTheOtherColumns) {
  struct Case {
    int64_t rows, cols, pitch;
    at::ScalarType dtype;
  };
  const Case cases[] = {{256, 2048, 2080, at::kBFloat16}, {96, 1024, 1056, at::kHalf},
                        {64, 512, 544, at::kFloat},       {37, 63, 70, at::kBFloat16},
                        {40, 128, 131, at::kHalf},        {3, 4096, 4096 + 48, at::kBFloat16}};
  std::vector<NF4Weight> weights;
  std::vector<at::Tensor> wide, outs;
  for (const Case& c : cases) {
    weights.push_back(QuantizeNF4(RandomWeight({c.rows, c.cols}, at::kFloat, 41 + c.cols).cuda()));
    wide.push_back(
        at::full({c.rows, c.pitch}, 5.0, at::TensorOptions().dtype(c.dtype).device(at::kCUDA)));
    outs.push_back(wide.back().narrow(1, 0, c.cols));
  }
  weights.push_back(QuantizeNF4(RandomWeight({1000, 64}, at::kFloat, 40).cuda()));
  outs.push_back(at::empty({1000, 64}, at::TensorOptions().dtype(at::kHalf).device(at::kCUDA)));
  std::vector<const NF4Weight*> pointers;
  for (const NF4Weight& w : weights) pointers.push_back(&w);
  DequantizeNF4ManyOut(pointers, outs);
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string what = "weight " + std::to_string(i);
    ExpectBitEqual(outs[i],
                   DequantizeNF4(weights[i].to(at::Device(at::kCPU)), outs[i].scalar_type()), what);
    if (i >= wide.size()) continue;
    const at::Tensor rest = wide[i].narrow(1, cases[i].cols, cases[i].pitch - cases[i].cols);
    EXPECT_TRUE(rest.eq(5.0).all().item<bool>()) << what << ": the columns after a row changed";
  }
  // One at a time (a launch of one) gives the same.
  at::Tensor alone = at::zeros({256, 2080}, wide[0].options());
  at::Tensor alone_view = alone.narrow(1, 0, 2048);
  DequantizeNF4Out(weights[0], alone_view);
  ExpectBitEqual(alone_view, outs[0].cpu(), "alone");
}

TEST_F(NF4Cuda, RunsOnTheCurrentStream) {
  const NF4Weight w = QuantizeNF4(RandomWeight({2048, 2048}, at::kHalf, 29).cuda());
  auto stream = c10::cuda::getStreamFromPool();
  at::Tensor out;
  {
    c10::cuda::CUDAStreamGuard guard(stream);
    out = DequantizeNF4(w, at::kHalf);
    stream.synchronize();  // only this stream: the result must be complete once it is
  }
  ExpectBitEqual(out, DequantizeNF4(w.to(at::Device(at::kCPU)), at::kHalf), "side stream");
}

}  // namespace
}  // namespace qlorad::ops
