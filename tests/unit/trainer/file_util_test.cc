#include "worker/trainer/file_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "tests/unit/trainer/test_util.h"

namespace qlorad::trainer {
namespace {

namespace fs = std::filesystem;

TEST(FileUtilTest, RemoveTreeDeletesNestedDirectoriesButNotSymlinkTargets) {
  testing::TempDir dir;
  testing::TempDir outside;
  testing::WriteFile(outside / "keep.txt", "x");
  fs::create_directories(dir / "tree/a/b");
  testing::WriteFile(dir / "tree/a/b/file", "data");
  testing::WriteFile(dir / "tree/top", "data");
  ASSERT_EQ(symlink(outside.path().c_str(), (dir / "tree/link").c_str()), 0);
  ASSERT_TRUE(RemoveTree(dir / "tree").ok());
  EXPECT_FALSE(fs::exists(dir / "tree"));
  EXPECT_TRUE(fs::exists(outside / "keep.txt"));
  EXPECT_TRUE(RemoveTree(dir / "never-existed").ok());
}

}  // namespace
}  // namespace qlorad::trainer
