#include "worker/trainer/runtime/dtype_names.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace qlorad::trainer {
namespace {

using ::testing::HasSubstr;

TEST(DtypeNamesTest, PrecisionAndTorchNamesMapToTheSameTypes) {
  struct Case {
    const char* precision;
    const char* torch_name;
    at::ScalarType type;
  };
  for (const Case& c : {Case{"bf16", "bfloat16", at::kBFloat16}, Case{"fp16", "float16", at::kHalf},
                        Case{"fp32", "float32", at::kFloat}}) {
    EXPECT_EQ(DtypeFromPrecision(c.precision), c.type) << c.precision;
    EXPECT_EQ(ScalarTypeOf(*ChoiceNamed<Precision>(c.precision)), c.type) << c.precision;
    EXPECT_EQ(DtypeFromTorchName(c.torch_name), c.type) << c.torch_name;
    EXPECT_EQ(TorchDtypeName(c.type), c.torch_name);
  }
}

TEST(DtypeNamesTest, OtherNamesAreRejectedAndTheErrorNamesTheField) {
  EXPECT_FALSE(DtypeFromPrecision("bfloat16").has_value());
  EXPECT_FALSE(DtypeFromPrecision("fp8").has_value());
  EXPECT_FALSE(DtypeFromTorchName("bf16").has_value());
  EXPECT_FALSE(DtypeFromTorchName("float64").has_value());
  const StatusOr<at::ScalarType> bad = ParsePrecision("int8", "--dtype");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              HasSubstr("--dtype: expected bf16, fp16 or fp32, got 'int8'"));
  const StatusOr<at::ScalarType> good = ParsePrecision("fp16", "--dtype");
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, at::kHalf);
}

}  // namespace
}  // namespace qlorad::trainer
