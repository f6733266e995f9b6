// NF4 dequantization benchmark (GPU machine): our kernel, in its chosen form (warp-staged 16-byte
// stores) and the experimental direct-store form, on the nine weights of the NF4 challenge and one
// large weight, next to a device-to-device copy as the bandwidth reference.
//
// Method: every output is first checked bit for bit against the CPU reference; inputs and outputs
// rotate over enough copies to exceed the L2 cache several times; warm-up, then the median over
// samples of back-to-back launches timed with CUDA events. Prints a table and writes JSON.
//   nf4_bench [--json FILE] [--samples N]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/nf4_dequant.h"
#include "kernels/nf4_dequant_kernels.cuh"
#include "kernels/nf4_dynamic_map.h"
#include "kernels/nf4_format.h"
#include "kernels/nf4_ref.h"

namespace {

using namespace qlorad::kernels;

#define CHECK_CUDA(expr)                                                 \
  do {                                                                   \
    cudaError_t err_ = (expr);                                           \
    if (err_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                   cudaGetErrorString(err_));                            \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)

void CheckOk(const qlorad::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

struct Shape {
  std::string name;
  int64_t rows, cols;
  OutFormat format;
};

int64_t OutBytesPerElement(OutFormat f) {
  return f == OutFormat::kFloat32 ? 4 : 2;
}
const char* FormatName(OutFormat f) {
  return f == OutFormat::kFloat32 ? "fp32" : f == OutFormat::kFloat16 ? "fp16" : "bf16";
}

// One quantized weight on the device, plus an output buffer.
struct DeviceWeight {
  NF4DequantParams params;
  std::vector<void*> allocations;
};

struct HostWeight {
  std::vector<uint8_t> packed, codes;
  std::vector<float> nested, absmax;
  float offset = 0.0f;
};

HostWeight QuantizeOnHost(int64_t numel, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(numel);
  for (float& x : w) x = normal(rng);
  HostWeight h;
  const int64_t n_blocks = ref::NumBlocks(numel, 64);
  h.packed.resize(ref::PackedBytes(numel));
  h.absmax.resize(n_blocks);
  CheckOk(ref::QuantizeNF4(w.data(), numel, 64, h.packed.data(), h.absmax.data()), "quantize");
  h.offset = ref::MeanOf(h.absmax.data(), n_blocks);
  h.codes.resize(n_blocks);
  h.nested.resize(ref::NumBlocks(n_blocks, kNestedBlocksize));
  ref::DoubleQuantizeAbsmax(h.absmax.data(), n_blocks, h.offset, kDynamicMapSigned, h.codes.data(),
                            h.nested.data());
  return h;
}

template <typename T>
T* Upload(const T* data, size_t count, std::vector<void*>& allocations) {
  void* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<size_t>(count * sizeof(T), 16)));
  CHECK_CUDA(cudaMemcpy(d, data, count * sizeof(T), cudaMemcpyHostToDevice));
  allocations.push_back(d);
  return static_cast<T*>(d);
}

DeviceWeight UploadWeight(const HostWeight& h, int64_t numel, OutFormat format) {
  DeviceWeight d;
  auto& p = d.params;
  p.numel = numel;
  p.blocksize = 64;
  p.double_quant = true;
  p.packed = Upload(h.packed.data(), h.packed.size(), d.allocations);
  p.absmax_codes = Upload(h.codes.data(), h.codes.size(), d.allocations);
  p.nested_absmax = Upload(h.nested.data(), h.nested.size(), d.allocations);
  p.nested_code = Upload(kDynamicMapSigned, 256, d.allocations);
  p.offset = Upload(&h.offset, 1, d.allocations);
  CHECK_CUDA(cudaMalloc(&p.out, numel * OutBytesPerElement(format)));
  d.allocations.push_back(p.out);
  p.format = format;
  return d;
}

int64_t BytesMoved(const DeviceWeight& d) {
  const int64_t n_blocks = ref::NumBlocks(d.params.numel, 64);
  return ref::PackedBytes(d.params.numel) + n_blocks + ref::NumBlocks(n_blocks, 256) * 4 + 256 * 4 +
         d.params.numel * OutBytesPerElement(d.params.format);
}

// The direct-store variant is an experiment: launched here from the kernel header, not offered by
// the library's launcher.
template <typename OutT>
void LaunchDirect(const NF4DequantParams& p, cudaStream_t stream) {
  cuda::NF4Table table;
  for (int i = 0; i < 16; ++i) table.value[i] = kNF4Code[i];
  const int64_t chunks = (p.numel + 31) / 32;
  const dim3 grid(
      static_cast<unsigned>((chunks + cuda::kDequantThreads - 1) / cuda::kDequantThreads));
  cuda::kDequantizeNF4<OutT, false, true><<<grid, cuda::kDequantThreads, 0, stream>>>(p, table, 6);
}

enum class Variant { kLibrary, kDirect };

void Launch(Variant v, const NF4DequantParams& p, cudaStream_t stream) {
  if (v == Variant::kLibrary) {
    CheckOk(LaunchNF4Dequantize(p, stream), "launch");
    return;
  }
  if (p.format == OutFormat::kFloat16) LaunchDirect<__half>(p, stream);
  if (p.format == OutFormat::kBFloat16) LaunchDirect<__nv_bfloat16>(p, stream);
  if (p.format == OutFormat::kFloat32) LaunchDirect<float>(p, stream);
  CHECK_CUDA(cudaGetLastError());
}

// Median time per call (us) of `launch(i)` over the rotating sets.
template <typename LaunchFn>
double MedianMicros(int sets, int samples, cudaStream_t stream, LaunchFn launch) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int w = 0; w < 3; ++w) {
    for (int i = 0; i < sets; ++i) launch(i);
  }
  std::vector<double> per_call;
  for (int s = 0; s < samples; ++s) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    for (int i = 0; i < sets; ++i) launch(i);
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    per_call.push_back(1000.0 * ms / sets);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

void VerifyAgainstReference(const HostWeight& h, const DeviceWeight& d, const char* what) {
  ref::NF4View v;
  v.packed = h.packed.data();
  v.numel = d.params.numel;
  v.double_quant = true;
  v.absmax_codes = h.codes.data();
  v.nested_absmax = h.nested.data();
  v.nested_code = kDynamicMapSigned;
  v.offset = h.offset;
  const size_t bytes = d.params.numel * OutBytesPerElement(d.params.format);
  std::vector<uint8_t> expected(bytes), got(bytes);
  CheckOk(ref::DequantizeNF4(v, static_cast<ref::FloatFormat>(d.params.format), expected.data()),
          "reference");
  CHECK_CUDA(cudaMemcpy(got.data(), d.params.out, bytes, cudaMemcpyDeviceToHost));
  if (std::memcmp(got.data(), expected.data(), bytes) != 0) {
    std::fprintf(stderr, "MISMATCH against the CPU reference: %s\n", what);
    std::exit(2);
  }
  size_t nonzero = 0;
  for (uint8_t b : got) nonzero += b != 0;
  if (nonzero < bytes / 4) {
    std::fprintf(stderr, "suspicious output (mostly zeros): %s\n", what);
    std::exit(2);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  int samples = 30;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--samples") && i + 1 < argc)
      samples = std::atoi(argv[++i]);
  }
  static_assert(static_cast<int>(OutFormat::kFloat16) ==
                static_cast<int>(ref::FloatFormat::kFloat16));
  static_assert(static_cast<int>(OutFormat::kBFloat16) ==
                static_cast<int>(ref::FloatFormat::kBFloat16));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const int64_t l2 = prop.l2CacheSize;
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));

  // Copy bandwidth reference: 1 GiB device-to-device (bytes read + written).
  const size_t copy_bytes = size_t{1} << 30;
  void *src, *dst;
  CHECK_CUDA(cudaMalloc(&src, copy_bytes));
  CHECK_CUDA(cudaMalloc(&dst, copy_bytes));
  CHECK_CUDA(cudaMemset(src, 1, copy_bytes));
  const double copy_us = MedianMicros(1, samples, stream, [&](int) {
    CHECK_CUDA(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, stream));
  });
  const double copy_gbs = 2.0 * copy_bytes / (copy_us * 1e3);
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(dst));

  const std::vector<Shape> shapes = {
      {"gate 8192x2048", 8192, 2048, OutFormat::kFloat16},
      {"up 8192x2048", 8192, 2048, OutFormat::kFloat16},
      {"down 2048x8192", 2048, 8192, OutFormat::kFloat16},
      {"gate 4096x1024", 4096, 1024, OutFormat::kBFloat16},
      {"up 4096x1024", 4096, 1024, OutFormat::kBFloat16},
      {"down 1024x4096", 1024, 4096, OutFormat::kBFloat16},
      {"gate 14336x4096", 14336, 4096, OutFormat::kBFloat16},
      {"up 14336x4096", 14336, 4096, OutFormat::kBFloat16},
      {"down 4096x14336", 4096, 14336, OutFormat::kBFloat16},
      {"large 28672x8192", 28672, 8192, OutFormat::kBFloat16},
  };

  std::printf("device: %s, L2 %lld MB, copy %.0f GB/s\n", prop.name,
              static_cast<long long>(l2 >> 20), copy_gbs);
  std::string json = "{\"device\": \"" + std::string(prop.name) +
                     "\", \"copy_gbps\": " + std::to_string(copy_gbs) + ", \"shapes\": [";
  std::vector<std::vector<DeviceWeight>> all_sets;
  double pass_us[2] = {0, 0};
  std::printf("%-20s %-5s %12s %9s %7s %12s %9s %7s\n", "weight", "dtype", "staged us", "GB/s",
              "%copy", "direct us", "GB/s", "%copy");
  for (size_t s = 0; s < shapes.size(); ++s) {
    const Shape& shape = shapes[s];
    const int64_t numel = shape.rows * shape.cols;
    const HostWeight h = QuantizeOnHost(numel, static_cast<uint32_t>(s + 1));
    std::vector<DeviceWeight> sets;
    sets.push_back(UploadWeight(h, numel, shape.format));
    const int64_t bytes = BytesMoved(sets[0]);
    const int n_sets = static_cast<int>(std::clamp<int64_t>((4 * l2 + bytes - 1) / bytes, 2, 64));
    for (int i = 1; i < n_sets; ++i) sets.push_back(UploadWeight(h, numel, shape.format));
    double us[2];
    for (Variant v : {Variant::kLibrary, Variant::kDirect}) {
      CHECK_CUDA(
          cudaMemsetAsync(sets[0].params.out, 0, numel * OutBytesPerElement(shape.format), stream));
      Launch(v, sets[0].params, stream);
      CHECK_CUDA(cudaStreamSynchronize(stream));
      VerifyAgainstReference(h, sets[0], shape.name.c_str());
      us[static_cast<int>(v)] =
          MedianMicros(n_sets, samples, stream, [&](int i) { Launch(v, sets[i].params, stream); });
    }
    const double gbs0 = bytes / (us[0] * 1e3), gbs1 = bytes / (us[1] * 1e3);
    std::printf("%-20s %-5s %12.1f %9.0f %6.1f%% %12.1f %9.0f %6.1f%%\n", shape.name.c_str(),
                FormatName(shape.format), us[0], gbs0, 100 * gbs0 / copy_gbs, us[1], gbs1,
                100 * gbs1 / copy_gbs);
    json += std::string(s ? ", " : "") + "{\"name\": \"" + shape.name + "\", \"dtype\": \"" +
            FormatName(shape.format) + "\", \"bytes\": " + std::to_string(bytes) +
            ", \"staged_us\": " + std::to_string(us[0]) +
            ", \"direct_us\": " + std::to_string(us[1]) +
            ", \"staged_pct_copy\": " + std::to_string(100 * gbs0 / copy_gbs) +
            ", \"direct_pct_copy\": " + std::to_string(100 * gbs1 / copy_gbs) + "}";
    if (s < 9) {
      all_sets.push_back(std::move(sets));
    } else {
      for (auto& d : sets) {
        for (void* a : d.allocations) CHECK_CUDA(cudaFree(a));
      }
    }
  }
  // One pass over the nine challenge weights, back to back (different copies each pass).
  for (Variant v : {Variant::kLibrary, Variant::kDirect}) {
    pass_us[static_cast<int>(v)] = MedianMicros(2, samples, stream, [&](int i) {
      for (auto& sets : all_sets) Launch(v, sets[i % sets.size()].params, stream);
    });
  }
  std::printf("nine-weight pass: staged %.1f us, direct %.1f us\n", pass_us[0], pass_us[1]);
  json += "], \"nine_pass_staged_us\": " + std::to_string(pass_us[0]) +
          ", \"nine_pass_direct_us\": " + std::to_string(pass_us[1]) + "}\n";
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fputs(json.c_str(), f);
    std::fclose(f);
  }
  return 0;
}
