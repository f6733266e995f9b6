// NF4 dequantization benchmark (GPU machine): our kernel on each of the nine weights of the NF4
// challenge and one large weight, then one pass over the nine weights as nine launches and as one
// grouped launch (LaunchNF4DequantizeMany), next to a device-to-device copy as the bandwidth
// reference. (The direct-store form, without warp staging, was measured 1.5x slower on an H100 and
// dropped: bench/results/2026-11-25-h100-1e9550b.txt.)
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

#include "kernels/float_format.h"
#include "kernels/nf4_dequant.h"
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
  FloatFormat format;
};

int64_t OutBytesPerElement(FloatFormat f) {
  return f == FloatFormat::kFloat32 ? 4 : 2;
}
const char* FormatName(FloatFormat f) {
  return f == FloatFormat::kFloat32 ? "fp32" : f == FloatFormat::kFloat16 ? "fp16" : "bf16";
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

DeviceWeight UploadWeight(const HostWeight& h, int64_t numel, FloatFormat format) {
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
  CheckOk(ref::DequantizeNF4(v, d.params.format, expected.data()), "reference");
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
      {"gate 8192x2048", 8192, 2048, FloatFormat::kFloat16},
      {"up 8192x2048", 8192, 2048, FloatFormat::kFloat16},
      {"down 2048x8192", 2048, 8192, FloatFormat::kFloat16},
      {"gate 4096x1024", 4096, 1024, FloatFormat::kBFloat16},
      {"up 4096x1024", 4096, 1024, FloatFormat::kBFloat16},
      {"down 1024x4096", 1024, 4096, FloatFormat::kBFloat16},
      {"gate 14336x4096", 14336, 4096, FloatFormat::kBFloat16},
      {"up 14336x4096", 14336, 4096, FloatFormat::kBFloat16},
      {"down 4096x14336", 4096, 14336, FloatFormat::kBFloat16},
      {"large 28672x8192", 28672, 8192, FloatFormat::kBFloat16},
  };

  std::printf("device: %s, L2 %lld MB, copy %.0f GB/s\n", prop.name,
              static_cast<long long>(l2 >> 20), copy_gbs);
  std::string json = "{\"device\": \"" + std::string(prop.name) +
                     "\", \"copy_gbps\": " + std::to_string(copy_gbs) + ", \"shapes\": [";
  std::vector<std::vector<DeviceWeight>> all_sets;
  std::vector<HostWeight> nine_hosts;
  std::printf("%-20s %-5s %9s %9s %7s\n", "weight", "dtype", "us", "GB/s", "%copy");
  int64_t nine_bytes = 0;
  for (size_t s = 0; s < shapes.size(); ++s) {
    const Shape& shape = shapes[s];
    const int64_t numel = shape.rows * shape.cols;
    HostWeight h = QuantizeOnHost(numel, static_cast<uint32_t>(s + 1));
    std::vector<DeviceWeight> sets;
    sets.push_back(UploadWeight(h, numel, shape.format));
    const int64_t bytes = BytesMoved(sets[0]);
    const int n_sets = static_cast<int>(std::clamp<int64_t>((4 * l2 + bytes - 1) / bytes, 2, 64));
    for (int i = 1; i < n_sets; ++i) sets.push_back(UploadWeight(h, numel, shape.format));
    CHECK_CUDA(
        cudaMemsetAsync(sets[0].params.out, 0, numel * OutBytesPerElement(shape.format), stream));
    CheckOk(LaunchNF4Dequantize(sets[0].params, stream), "launch");
    CHECK_CUDA(cudaStreamSynchronize(stream));
    VerifyAgainstReference(h, sets[0], shape.name.c_str());
    const double us = MedianMicros(n_sets, samples, stream, [&](int i) {
      CheckOk(LaunchNF4Dequantize(sets[i].params, stream), "launch");
    });
    const double gbs = bytes / (us * 1e3);
    std::printf("%-20s %-5s %9.1f %9.0f %6.1f%%\n", shape.name.c_str(), FormatName(shape.format),
                us, gbs, 100 * gbs / copy_gbs);
    json += std::string(s ? ", " : "") + "{\"name\": \"" + shape.name + "\", \"dtype\": \"" +
            FormatName(shape.format) + "\", \"bytes\": " + std::to_string(bytes) +
            ", \"us\": " + std::to_string(us) +
            ", \"pct_copy\": " + std::to_string(100 * gbs / copy_gbs) + "}";
    if (s < 9) {
      nine_bytes += bytes;
      nine_hosts.push_back(std::move(h));
      all_sets.push_back(std::move(sets));
    } else {
      for (auto& d : sets) {
        for (void* a : d.allocations) CHECK_CUDA(cudaFree(a));
      }
    }
  }

  // One pass over the nine challenge weights (a different copy of each per pass): nine launches,
  // then one grouped launch (two, in fact: one per output format), checked against the reference.
  auto group_of = [&](int i) {
    std::vector<NF4DequantParams> group;
    for (auto& sets : all_sets) group.push_back(sets[i % sets.size()].params);
    return group;
  };
  const std::vector<NF4DequantParams> groups[2] = {group_of(0), group_of(1)};
  for (auto& sets : all_sets) {
    CHECK_CUDA(cudaMemsetAsync(sets[0].params.out, 0,
                               sets[0].params.numel * OutBytesPerElement(sets[0].params.format),
                               stream));
  }
  CheckOk(LaunchNF4DequantizeMany(groups[0].data(), 9, stream), "grouped launch");
  CHECK_CUDA(cudaStreamSynchronize(stream));
  for (size_t w = 0; w < all_sets.size(); ++w) {
    VerifyAgainstReference(nine_hosts[w], all_sets[w][0], ("grouped " + shapes[w].name).c_str());
  }
  const double nine_us = MedianMicros(2, samples, stream, [&](int i) {
    for (const NF4DequantParams& p : groups[i]) CheckOk(LaunchNF4Dequantize(p, stream), "launch");
  });
  const double grouped_us = MedianMicros(2, samples, stream, [&](int i) {
    CheckOk(LaunchNF4DequantizeMany(groups[i].data(), 9, stream), "grouped launch");
  });
  const double floor_us = nine_bytes / (copy_gbs * 1e3);
  std::printf(
      "nine-weight pass (%.0f MB, %.1f us at copy bandwidth): nine launches %.1f us (%.1f%% of "
      "copy), one grouped launch %.1f us (%.1f%% of copy)\n",
      nine_bytes / 1e6, floor_us, nine_us, 100 * floor_us / nine_us, grouped_us,
      100 * floor_us / grouped_us);
  json += "], \"nine_pass_bytes\": " + std::to_string(nine_bytes) +
          ", \"nine_pass_launches_us\": " + std::to_string(nine_us) +
          ", \"nine_pass_grouped_us\": " + std::to_string(grouped_us) + "}\n";
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
