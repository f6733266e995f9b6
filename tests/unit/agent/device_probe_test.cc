#include "worker/agent/device_probe.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "tests/unit/agent/script_fixture.h"

namespace qlorad::agent {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

TEST(DeviceProbeTest, CpuOfThisMachine) {
  auto device = DetectCpuDevice();
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  EXPECT_EQ(device->kind(), "cpu");
  EXPECT_EQ(device->index(), 0);
  EXPECT_FALSE(device->name().empty());
  // /proc/meminfo and sysconf describe the same RAM; MemTotal excludes only kernel-reserved pages.
  const int64_t phys = static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE);
  EXPECT_LE(device->total_memory_bytes(), phys);
  EXPECT_GT(device->total_memory_bytes(), phys * 9 / 10);
}

TEST(DeviceProbeTest, CpuModelNameFromCpuinfo) {
  EXPECT_EQ(CpuModelName("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) "
                         "Xeon(R) Platinum 8480C\nflags\t: fpu\n"),
            "Intel(R) Xeon(R) Platinum 8480C");
  // ARM: no model name line; the architecture is reported instead.
  EXPECT_THAT(CpuModelName("processor\t: 0\nBogoMIPS\t: 50.00\n"), HasSubstr("CPU ("));
}

TEST(DeviceProbeTest, MemTotalParsing) {
  auto bytes = ParseMemTotalBytes("MemTotal:       24576000 kB\nMemFree:  100 kB\n");
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, int64_t{24576000} * 1024);
  EXPECT_THAT(ParseMemTotalBytes("MemFree: 1 kB\n").status().message(), HasSubstr("MemTotal"));
  EXPECT_THAT(ParseMemTotalBytes("MemTotal: lots\n").status().message(), HasSubstr("lots"));
}

TEST(DeviceProbeTest, BadMeminfoFileIsNamedInTheError) {
  TempDir dir;
  const auto meminfo = dir.path() / "meminfo";
  std::ofstream(meminfo) << "MemFree: 5 kB\n";
  auto device = DetectCpuDevice("/proc/cpuinfo", meminfo.string());
  ASSERT_FALSE(device.ok());
  EXPECT_THAT(device.status().message(), HasSubstr(meminfo.string()));
  auto missing = DetectCpuDevice("/nonexistent/cpuinfo");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/cpuinfo"));
}

// A stand-in nvidia-smi that prints `answer` when asked the documented `query` for GPU `index`,
// and fails naming its arguments otherwise.
std::filesystem::path FakeNvidiaSmi(TempDir& dir, const std::string& query, int index,
                                    const std::string& answer) {
  const std::string expected =
      "--query-gpu=" + query + " --format=csv,noheader,nounits -i " + std::to_string(index);
  return dir.Script("nvidia-smi", "[ \"$*\" = \"" + expected +
                                      "\" ] || { echo \"unexpected args: $*\" >&2; exit 9; }\n"
                                      "echo \"" +
                                      answer + "\"\n");
}

TEST(DeviceProbeTest, GpuFromNvidiaSmi) {
  TempDir dir;
  const auto smi = FakeNvidiaSmi(dir, "name,memory.total", 3, "NVIDIA H100 80GB HBM3, 81559");
  auto device = DetectGpuDevice(3, smi.string());
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  EXPECT_EQ(device->kind(), "cuda");
  EXPECT_EQ(device->index(), 3);
  EXPECT_EQ(device->name(), "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(device->total_memory_bytes(), int64_t{81559} * 1024 * 1024);
}

TEST(DeviceProbeTest, GpuFreeMemoryFromNvidiaSmi) {
  TempDir dir;
  const auto smi = FakeNvidiaSmi(dir, "memory.free", 1, "79123");
  auto free_bytes = DetectGpuFreeMemory(1, smi.string());
  ASSERT_TRUE(free_bytes.ok()) << free_bytes.status().ToString();
  EXPECT_EQ(*free_bytes, int64_t{79123} * 1024 * 1024);

  const auto garbled = dir.Script("garbled-smi", "echo '[N/A]'\n");
  auto bad = DetectGpuFreeMemory(1, garbled.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--gpu 1"));
  EXPECT_THAT(bad.status().message(), HasSubstr("[N/A]"));
}

TEST(DeviceProbeTest, NvidiaSmiFailureIsAClearError) {
  TempDir dir;
  const auto smi = dir.Script("nvidia-smi", "echo 'No devices were found'\nexit 6\n");
  auto device = DetectGpuDevice(0, smi.string());
  ASSERT_FALSE(device.ok());
  EXPECT_THAT(device.status().message(), HasSubstr("--gpu 0"));
  EXPECT_THAT(device.status().message(), HasSubstr("exit 6"));
  EXPECT_THAT(device.status().message(), HasSubstr("No devices were found"));

  auto missing = DetectGpuDevice(0, (dir.path() / "no-such-nvidia-smi").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("no-such-nvidia-smi"));

  const auto garbled = dir.Script("garbled-smi", "echo 'NVIDIA H100, [N/A]'\n");
  auto bad = DetectGpuDevice(0, garbled.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("[N/A]"));
}

}  // namespace
}  // namespace qlorad::agent
