// What the trainer takes from torch's out-of-memory message, and its test hook.
#include "worker/trainer/runtime/out_of_memory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>

namespace qlorad::trainer {
namespace {

using ::testing::HasSubstr;

// The caching allocator's words (torch 2.11, with a memory fraction set).
constexpr const char* kCudaMessage =
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of "
    "which 60.12 GiB is free. Including non-PyTorch memory, this process has 19.06 GiB memory in "
    "use. Of the allocated memory 17.50 GiB is allocated by PyTorch, with 18.00 GiB allowed; and "
    "1.02 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large "
    "try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
    "documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html)";

TEST(OutOfMemoryTest, DescribesWhatWasAskedForAndHeldWithoutTheAdvice) {
  try {
    TORCH_CHECK_WITH(OutOfMemoryError, false, kCudaMessage);
    FAIL() << "no exception";
  } catch (const c10::OutOfMemoryError& e) {
    EXPECT_EQ(DescribeOutOfMemory(e),
              "Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 60.12 "
              "GiB is free. Including non-PyTorch memory, this process has 19.06 GiB memory in "
              "use. Of the allocated memory 17.50 GiB is allocated by PyTorch, with 18.00 GiB "
              "allowed; and 1.02 GiB is reserved by PyTorch but unallocated");
  }
}

class InjectionEnv : public ::testing::Test {
 protected:
  void TearDown() override { unsetenv("QLORAD_INJECT_OOM_ROWS"); }
};

TEST_F(InjectionEnv, ThrowsOnlyAboveTheRowLimit) {
  setenv("QLORAD_INJECT_OOM_ROWS", "2", 1);
  auto injection = OomInjection::FromEnvironment();
  ASSERT_TRUE(injection.ok()) << injection.status().ToString();
  EXPECT_NO_THROW(injection->MaybeThrow(2, 1 << 20));
  try {
    injection->MaybeThrow(3, 3 << 20);
    FAIL() << "no exception";
  } catch (const c10::OutOfMemoryError& e) {
    EXPECT_THAT(DescribeOutOfMemory(e),
                HasSubstr("Tried to allocate 3.00 MiB (injected: QLORAD_INJECT_OOM_ROWS=2"));
  }
  unsetenv("QLORAD_INJECT_OOM_ROWS");
  auto none = OomInjection::FromEnvironment();
  ASSERT_TRUE(none.ok());
  EXPECT_NO_THROW(none->MaybeThrow(1000, 1));
}

TEST_F(InjectionEnv, ABadValueNamesTheVariable) {
  for (const char* bad : {"-1", "2x", "many"}) {
    setenv("QLORAD_INJECT_OOM_ROWS", bad, 1);
    auto injection = OomInjection::FromEnvironment();
    ASSERT_FALSE(injection.ok()) << bad;
    EXPECT_THAT(injection.status().message(), HasSubstr("QLORAD_INJECT_OOM_ROWS: must be"));
  }
}

TEST(OutOfMemoryTest, AMemoryFractionNeedsACudaDevice) {
  setenv("QLORAD_CUDA_MEMORY_FRACTION", "0.5", 1);
  auto cpu = LimitMemoryFromEnvironment(at::kCPU);
  setenv("QLORAD_CUDA_MEMORY_FRACTION", "half", 1);
  auto bad = LimitMemoryFromEnvironment(at::kCPU);
  unsetenv("QLORAD_CUDA_MEMORY_FRACTION");
  ASSERT_FALSE(cpu.ok());
  EXPECT_THAT(cpu.status().message(), HasSubstr("QLORAD_CUDA_MEMORY_FRACTION: only a CUDA device"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("QLORAD_CUDA_MEMORY_FRACTION: not a number"));
  auto unset = LimitMemoryFromEnvironment(at::kCPU);
  ASSERT_TRUE(unset.ok());
  EXPECT_FALSE(unset->has_value());
}

}  // namespace
}  // namespace qlorad::trainer
