#include "worker/trainer/io/file_util.h"

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

TEST(FileUtilTest, ReadFileToStringKeepsEveryByteAndNamesAMissingFile) {
  testing::TempDir dir;
  const std::string bytes("line\r\n\0\xff end", 12);
  testing::WriteFile(dir / "data.bin", bytes);
  StatusOr<std::string> read = ReadFileToString(dir / "data.bin");
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(*read, bytes);

  testing::WriteFile(dir / "empty", "");
  StatusOr<std::string> empty = ReadFileToString(dir / "empty");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(*empty, "");

  const std::string missing_path = dir / "missing.json";
  StatusOr<std::string> missing = ReadFileToString(missing_path);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), missing_path + ": cannot open");
}

}  // namespace
}  // namespace qlorad::trainer
