#include "worker/trainer/io/ggml_quants.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/nf4_ref.h"

namespace qlorad::trainer {
namespace {

// One block worked by hand: max |x| = 127/64, so d = 1/64 exactly (fp16 0x2400), 1/d = 64, and
// q = round(64 x) with ties away from zero (roundf), not to even.
TEST(Q8_0Test, HandComputedBlock) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f / 64;   // q = 127
  x[1] = -63.5f / 64;   // q = -63.5 -> -64
  x[2] = 0.5f / 64;     // q = 0.5 -> 1
  x[3] = -0.5f / 64;    // q = -0.5 -> -1
  x[4] = 1.25f / 64;    // q = 1.25 -> 1
  x[5] = -127.0f / 64;  // q = -127
  x[6] = 2.75f / 64;    // q = 2.75 -> 3
  std::vector<uint8_t> block(kQ8_0BlockBytes);
  QuantizeRowQ8_0(x.data(), 32, block.data());
  uint16_t d16;
  std::memcpy(&d16, block.data(), 2);
  EXPECT_EQ(d16, 0x2400);  // 2^-6: exponent 9, mantissa 0
  const auto q = [&](int j) { return static_cast<int8_t>(block[2 + j]); };
  EXPECT_EQ(q(0), 127);
  EXPECT_EQ(q(1), -64);
  EXPECT_EQ(q(2), 1);
  EXPECT_EQ(q(3), -1);
  EXPECT_EQ(q(4), 1);
  EXPECT_EQ(q(5), -127);
  EXPECT_EQ(q(6), 3);
  for (int j = 7; j < 32; ++j) EXPECT_EQ(q(j), 0);

  std::vector<float> back(32);
  DequantizeRowQ8_0(block.data(), 32, back.data());
  EXPECT_EQ(back[0], 127.0f / 64);
  EXPECT_EQ(back[1], -1.0f);
  EXPECT_EQ(back[6], 3.0f / 64);
}

TEST(Q8_0Test, ZeroBlockAndErrorBound) {
  std::vector<float> x(64, 0.0f);
  for (int j = 32; j < 64; ++j) x[j] = std::sin(0.37f * j) * (j % 5 + 1);  // a second block
  std::vector<uint8_t> blocks(2 * kQ8_0BlockBytes);
  QuantizeRowQ8_0(x.data(), 64, blocks.data());
  for (int j = 0; j < kQ8_0BlockBytes; ++j) EXPECT_EQ(blocks[j], 0) << j;  // d = 0, q = 0
  std::vector<float> back(64);
  DequantizeRowQ8_0(blocks.data(), 64, back.data());
  uint16_t d16;
  std::memcpy(&d16, blocks.data() + kQ8_0BlockBytes, 2);
  const float d = kernels::ref::HalfBitsToFloat(d16);
  for (int j = 32; j < 64; ++j) {
    // Rounding to the int8 grid costs d / 2; the fp16 scale adds |q| * (its rounding), at most
    // 127 * d * 2^-11.
    EXPECT_LE(std::fabs(x[j] - back[j]), d / 2 + 127 * d * std::ldexp(1.0f, -11)) << j;
  }
}

}  // namespace
}  // namespace qlorad::trainer
