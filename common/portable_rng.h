// SplitMix64: a tiny generator whose output depends only on integer arithmetic, so the same seed
// gives the same stream on every machine, compiler and torch version (torch's generators do not
// promise that across CPU, CUDA and releases). Used for the tiny model's weights and data shuffle.
#pragma once

#include <cstdint>

namespace qlorad::trainer {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) from the top 53 bits: exact in double, no rounding differences.
  double NextUnit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n) (n > 0); the modulo bias is negligible for dataset sizes.
  uint64_t NextBelow(uint64_t n) { return Next() % n; }

 private:
  uint64_t state_;
};

}  // namespace qlorad::trainer
