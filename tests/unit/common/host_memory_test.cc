// The host memory figures read from /proc and cgroup v2 files, here written into a temporary
// folder: MemAvailable alone, and a cgroup's limit below it (its page cache counted as free).
#include "common/host_memory.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/unit/common/process/script_fixture.h"

namespace qlorad {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

class HostMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Write(dir_ / "meminfo",
          "MemTotal:       134217728 kB\nMemFree: 1000 kB\n"
          "MemAvailable:   125829120 kB\n");  // 128 GiB, 120 GiB available
  }
  std::optional<int64_t> Available() {
    return HostAvailableBytes((dir_ / "meminfo").string(), (dir_ / "self_cgroup").string(),
                              (dir_ / "cgroup").string());
  }
  process::testing::TempDir temp_;
  const fs::path dir_ = temp_.path();
};

constexpr int64_t kGiB = int64_t{1} << 30;

TEST_F(HostMemoryTest, MemAvailableWithoutACgroupLimit) {
  EXPECT_EQ(Available(), 120 * kGiB);  // no /proc/self/cgroup at all
  Write(dir_ / "self_cgroup", "0::/job\n");
  Write(dir_ / "cgroup/job/memory.max", "max\n");
  Write(dir_ / "cgroup/job/memory.current", "1073741824\n");
  EXPECT_EQ(Available(), 120 * kGiB);  // "max": no limit
}

TEST_F(HostMemoryTest, ACgroupLimitBelowMemAvailableWinsWithItsPageCacheFree) {
  Write(dir_ / "self_cgroup", "1:name=systemd:/x\n0::/job/\n");
  Write(dir_ / "cgroup/job/memory.max", std::to_string(64 * kGiB) + "\n");
  Write(dir_ / "cgroup/job/memory.current", std::to_string(30 * kGiB) + "\n");
  Write(dir_ / "cgroup/job/memory.stat",
        "anon 100\nfile " + std::to_string(10 * kGiB) + "\nkernel 5\n");
  EXPECT_EQ(Available(), 44 * kGiB);  // 64 - 30 + 10
}

TEST_F(HostMemoryTest, UnreadableMeminfoIsUnknown) {
  fs::remove(dir_ / "meminfo");
  EXPECT_EQ(Available(), std::nullopt);
  Write(dir_ / "meminfo", "MemTotal: 1 kB\n");  // no MemAvailable line
  EXPECT_EQ(Available(), std::nullopt);
}

TEST(MeminfoBytesTest, ParsesKibAndNamesTheFieldInErrors) {
  EXPECT_EQ(*MeminfoBytes("MemTotal: 4 kB\nMemAvailable:   2 kB\n", "MemAvailable"), 2048);
  EXPECT_EQ(MeminfoBytes("MemTotal: 4 kB\n", "MemAvailable").status().message(),
            "meminfo: no MemAvailable line");
  EXPECT_EQ(MeminfoBytes("MemAvailable: lots\n", "MemAvailable").status().message(),
            "meminfo: MemAvailable: expected '<n> kB', got 'lots'");
}

}  // namespace
}  // namespace qlorad
