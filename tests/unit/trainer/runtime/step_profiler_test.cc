// The step profiler on the CPU (Kineto's CPU activities): it writes its trace after the last
// profiled step, or, for a run whose steps end inside the profiled ones, when it is stopped; a
// recording left on is switched off by the destructor (left on, it crashed the process at exit).
#include "worker/trainer/runtime/step_profiler.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/unit/trainer/test_util.h"

namespace qlorad::trainer {
namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class StepProfilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("QLORAD_PROFILE", (dir_ / "trace").c_str(), 1);
    setenv("QLORAD_PROFILE_FIRST", "1", 1);
    setenv("QLORAD_PROFILE_STEPS", "3", 1);
  }
  void TearDown() override {
    for (const char* name : {"QLORAD_PROFILE", "QLORAD_PROFILE_FIRST", "QLORAD_PROFILE_STEPS"}) {
      unsetenv(name);
    }
  }
  // One step's worth of recorded work.
  static void Work() { (at::ones({8, 8}).matmul(at::ones({8, 8})) + 1).sum().item<float>(); }

  testing::TempDir dir_;
};

TEST_F(StepProfilerTest, WritesTheTraceAfterTheLastProfiledStep) {
  StepProfiler profiler(/*rank=*/2, /*first_step=*/10, at::kCPU);
  const std::string path = dir_ / "trace-rank2.json";
  for (int64_t step = 10; step < 15; ++step) {
    profiler.BeginStep(step);
    Work();
    const std::string written = profiler.EndStep(step);
    // Steps 11, 12 and 13 (the first 1 after the run's first step, 3 of them): written at 13.
    EXPECT_EQ(written, step == 13 ? path : "") << step;
  }
  EXPECT_NE(Read(path).find("traceEvents"), std::string::npos);
  EXPECT_EQ(profiler.Stop(), "");  // nothing recording any more
}

TEST_F(StepProfilerTest, ARunEndingInsideTheProfiledStepsWritesWhatItRecorded) {
  {
    StepProfiler profiler(/*rank=*/0, /*first_step=*/0, at::kCPU);
    for (int64_t step = 0; step < 3; ++step) {
      profiler.BeginStep(step);
      Work();
      EXPECT_EQ(profiler.EndStep(step), "") << step;
    }
    const std::string path = profiler.Stop();
    EXPECT_EQ(path, dir_ / "trace-rank0.json");
    EXPECT_NE(Read(path).find("traceEvents"), std::string::npos);
  }
  // Left recording: the destructor switches it off, and a profiler can start again.
  {
    StepProfiler left_on(/*rank=*/1, /*first_step=*/0, at::kCPU);
    left_on.BeginStep(1);
    Work();
  }
  StepProfiler again(/*rank=*/3, /*first_step=*/0, at::kCPU);
  again.BeginStep(1);
  Work();
  EXPECT_EQ(again.Stop(), dir_ / "trace-rank3.json");
}

}  // namespace
}  // namespace qlorad::trainer
