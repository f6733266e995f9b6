#include "common/path_sandbox.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace qlorad {
namespace {

namespace fs = std::filesystem;

// A worker's layout in a fresh temporary folder: <tmp>/work (the --work-dir and write root),
// <tmp>/models (a read root), <tmp>/secret (outside every root).
class PathSandbox : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("path_sandbox_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    for (const char* d : {"work/data", "models/tiny", "secret"}) fs::create_directories(tmp_ / d);
    std::ofstream(tmp_ / "secret" / "shadow") << "x";
    std::ofstream(tmp_ / "work" / "data" / "train.jsonl") << "{}\n";
    auto resolved = ResolveRoots({tmp_ / "work", {tmp_ / "models", tmp_ / "work"}, "."},
                                 "--read-root", "--write-root");
    ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
    roots_ = *resolved;
    spec_.model.path = (tmp_ / "models" / "tiny").string();
    spec_.data.path = "data/train.jsonl";
    spec_.checkpoint.output_dir = "runs/demo";
  }
  void TearDown() override { fs::remove_all(tmp_); }

  std::optional<PathRefusal> Check(PathResolution how = PathResolution::kFollowSymlinks,
                                   const std::string& resume = "") {
    return CheckSpecPaths(spec_, resume, roots_, how);
  }

  fs::path tmp_;
  PathRoots roots_;
  JobSpec spec_;
};

TEST_F(PathSandbox, PathsInsideTheRootsPassBothWays) {
  EXPECT_FALSE(Check(PathResolution::kFollowSymlinks).has_value());
  EXPECT_FALSE(Check(PathResolution::kWrittenOnly).has_value());
  EXPECT_FALSE(Check(PathResolution::kFollowSymlinks, "runs/demo/checkpoints/attempt-0/step-4"));
}

TEST_F(PathSandbox, AnAbsolutePathOutsideIsRefusedNamingFieldPathAndRoots) {
  spec_.data.path = (tmp_ / "secret" / "shadow").string();
  for (PathResolution how : {PathResolution::kWrittenOnly, PathResolution::kFollowSymlinks}) {
    auto refused = Check(how);
    ASSERT_TRUE(refused.has_value());
    EXPECT_EQ(refused->field, "data.path");
    EXPECT_EQ(refused->message.rfind("data.path: " + spec_.data.path + " is outside", 0), 0u)
        << refused->message;
    EXPECT_NE(refused->message.find((tmp_ / "models").string()), std::string::npos);
    EXPECT_NE(refused->message.find((tmp_ / "work").string()), std::string::npos);
    EXPECT_EQ(refused->ToStatus().code(), StatusCode::kInvalidArgument);
  }
}

TEST_F(PathSandbox, DotDotCannotClimbOut) {
  spec_.checkpoint.output_dir = "runs/../../secret/out";
  auto refused = Check(PathResolution::kWrittenOnly);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->field, "checkpoint.output_dir");
  EXPECT_NE(refused->message.find("may write: " + roots_.write.string()), std::string::npos)
      << refused->message;
  // Through a folder that does not exist yet, too.
  spec_.checkpoint.output_dir = "runs/new/../../../secret";
  EXPECT_TRUE(Check(PathResolution::kFollowSymlinks).has_value());
}

TEST_F(PathSandbox, ARootIsMatchedByWholeNamesNotByPrefix) {
  fs::create_directories(tmp_ / "models-private");
  spec_.model.path = (tmp_ / "models-private").string();
  auto refused = Check();
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->field, "model.path");
}

TEST_F(PathSandbox, ASymbolicLinkOutOfARootIsRefusedOnlyWhereLinksAreFollowed) {
  fs::create_directory_symlink(tmp_ / "secret", tmp_ / "work" / "data" / "escape");
  spec_.data.path = "data/escape/shadow";
  // The coordinator cannot see the link; the worker can.
  EXPECT_FALSE(Check(PathResolution::kWrittenOnly).has_value());
  auto refused = Check(PathResolution::kFollowSymlinks);
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->message.find("resolves to " + (tmp_ / "secret" / "shadow").string()),
            std::string::npos)
      << refused->message;
  // A link whose target is inside a root is fine.
  fs::create_directory_symlink(tmp_ / "models" / "tiny", tmp_ / "work" / "model");
  spec_.data.path = "data/train.jsonl";
  spec_.model.path = "model";
  EXPECT_FALSE(Check().has_value());
}

TEST_F(PathSandbox, OutputsGoUnderTheWriteRootOnlyAndResumeToo) {
  spec_.checkpoint.output_dir = (tmp_ / "models" / "out").string();  // readable, not writable
  auto refused = Check();
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->field, "checkpoint.output_dir");
  spec_.checkpoint.output_dir = "runs/demo";
  refused = Check(PathResolution::kFollowSymlinks, (tmp_ / "secret").string());
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->field, "resume_from");
}

TEST_F(PathSandbox, ValidationFileAndInitialAdapterAreReadPaths) {
  spec_.data.validation_path = "../secret/shadow";
  auto refused = Check();
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->field, "data.validation");
  spec_.data.validation_path = "";
  spec_.lora.init_from = "/";
  refused = Check();
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->field, "lora.init_from");
  // An adapter an earlier job wrote under the write root may seed a new one.
  spec_.lora.init_from = "runs/earlier/adapter";
  EXPECT_FALSE(Check().has_value());
}

TEST_F(PathSandbox, ResolveRootsNamesTheFlagOfAMissingReadRoot) {
  auto bad = ResolveRoots({tmp_ / "work", {tmp_ / "nope"}, "."}, "--read-root", "--write-root");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().rfind("--read-root: " + (tmp_ / "nope").string(), 0), 0u)
      << bad.status().message();
  // The write root is made when missing, relative to the base.
  auto made = ResolveRoots({tmp_ / "work", {}, "outputs"}, "--read-root", "--write-root");
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(made->write, fs::canonical(tmp_ / "work" / "outputs"));
}

}  // namespace
}  // namespace qlorad
