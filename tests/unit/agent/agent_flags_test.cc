#include "worker/agent/agent_flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "tests/unit/agent/script_fixture.h"

namespace qlorad::agent {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

// Parses a command line given as strings (CLI11 wants mutable char*).
std::optional<int> Parse(std::vector<std::string> args, AgentFlags* flags) {
  args.insert(args.begin(), "qlorad-worker");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseAgentFlags(static_cast<int>(argv.size()), argv.data(), flags);
}

TEST(AgentFlagsTest, Defaults) {
  AgentFlags flags;
  EXPECT_EQ(Parse({}, &flags), std::nullopt);
  EXPECT_EQ(flags.coordinator, "127.0.0.1:50051");
  EXPECT_FALSE(flags.gpu.has_value());
  EXPECT_EQ(flags.work_dir, "./qlorad-work");
  EXPECT_DOUBLE_EQ(flags.grace_period_s, 10);
}

TEST(AgentFlagsTest, GpuAndCpuAreExclusiveAndUsageErrorsExitWithTwo) {
  AgentFlags flags;
  EXPECT_EQ(Parse({"--gpu", "3", "--grace-period-s", "2.5"}, &flags), std::nullopt);
  EXPECT_EQ(flags.gpu, 3);
  EXPECT_DOUBLE_EQ(flags.grace_period_s, 2.5);
  AgentFlags both;
  EXPECT_EQ(Parse({"--cpu", "--gpu", "0"}, &both), 2);
  AgentFlags negative;
  EXPECT_EQ(Parse({"--gpu", "-1"}, &negative), 2);
  AgentFlags level;
  EXPECT_EQ(Parse({"--log-level", "loud"}, &level), 2);
}

TEST(AgentFlagsTest, ResolveFillsTheNameAndAnAbsoluteWorkDir) {
  TempDir dir;
  const auto trainer = dir.Script("qlorad-train", "exit 0\n");
  AgentFlags flags;
  flags.trainer = trainer.string();
  flags.work_dir = (dir.path() / "work" / ".." / "work").string();
  auto options = ResolveAgentOptions(flags);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  EXPECT_EQ(options->trainer.work_dir, dir.path() / "work");
  EXPECT_TRUE(std::filesystem::is_directory(dir.path() / "work"));
  EXPECT_EQ(options->trainer.trainer, trainer);
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  EXPECT_EQ(options->name, std::string(host) + "-cpu");
  EXPECT_EQ(options->hostname, std::string(host)) << "advertised for the rendezvous by default";
  EXPECT_EQ(options->device.kind(), "cpu");
  EXPECT_EQ(options->grace_period, std::chrono::milliseconds(10000));
}

TEST(AgentFlagsTest, AdvertiseAddressReplacesTheHostNameForTheRendezvousOnly) {
  TempDir dir;
  AgentFlags flags;
  EXPECT_EQ(Parse({"--advertise-address", "10.213.0.10"}, &flags), std::nullopt);
  EXPECT_EQ(flags.advertise_address, "10.213.0.10");
  flags.trainer = dir.Script("qlorad-train", "exit 0\n").string();
  flags.work_dir = (dir.path() / "work").string();
  auto options = ResolveAgentOptions(flags);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  EXPECT_EQ(options->hostname, "10.213.0.10");
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  EXPECT_EQ(options->name, std::string(host) + "-cpu") << "the name stays the host's";

  flags.advertise_address = "10.213.0.10:5000";
  options = ResolveAgentOptions(flags);
  ASSERT_FALSE(options.ok());
  EXPECT_THAT(options.status().message(), HasSubstr("--advertise-address: '10.213.0.10:5000'"));
}

TEST(AgentFlagsTest, TestHookFreeMemoryIsReportedAndCheckedAgainstTheTotal) {
  AgentFlags alone;
  EXPECT_EQ(Parse({"--test-gpu-free-memory-bytes", "5"}, &alone), 2)
      << "needs --test-gpu-memory-bytes";
  TempDir dir;
  AgentFlags flags;
  ASSERT_EQ(Parse({"--test-gpu-memory-bytes", "100", "--test-gpu-free-memory-bytes", "60"}, &flags),
            std::nullopt);
  flags.trainer = dir.Script("qlorad-train", "exit 0\n").string();
  flags.work_dir = (dir.path() / "work").string();
  auto options = ResolveAgentOptions(flags);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  ASSERT_TRUE(options->gpu_free_memory);
  EXPECT_EQ(options->gpu_free_memory().value(), 60);
  flags.test_gpu_free_memory_bytes = 101;
  auto more = ResolveAgentOptions(flags);
  ASSERT_FALSE(more.ok());
  EXPECT_THAT(more.status().message(), HasSubstr("--test-gpu-free-memory-bytes: 101 is more than"));
}

TEST(AgentFlagsTest, MissingTrainerIsAnErrorNamingTheFlag) {
  TempDir dir;
  AgentFlags flags;
  flags.trainer = (dir.path() / "nope").string();
  flags.work_dir = (dir.path() / "work").string();
  auto options = ResolveAgentOptions(flags);
  ASSERT_FALSE(options.ok());
  EXPECT_THAT(options.status().message(), HasSubstr("--trainer"));
  EXPECT_THAT(options.status().message(), HasSubstr(flags.trainer));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "work")) << "nothing created on a bad flag";
}

TEST(AgentFlagsTest, PathRootsDefaultToTheWorkDirAndAreResolved) {
  TempDir dir;
  const auto trainer = dir.Script("qlorad-train", "exit 0\n");
  std::filesystem::create_directories(dir.path() / "models");
  std::filesystem::create_directory_symlink(dir.path() / "models", dir.path() / "models-link");
  AgentFlags flags;
  flags.trainer = trainer.string();
  flags.work_dir = (dir.path() / "work").string();
  auto options = ResolveAgentOptions(flags);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  EXPECT_EQ(options->trainer.roots.base, dir.path() / "work");
  EXPECT_EQ(options->trainer.roots.read, std::vector<std::filesystem::path>{dir.path() / "work"});
  EXPECT_EQ(options->trainer.roots.write, dir.path() / "work");

  flags.read_roots = {(dir.path() / "models-link").string()};
  flags.write_root = (dir.path() / "out").string();
  options = ResolveAgentOptions(flags);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  EXPECT_EQ(options->trainer.roots.read, std::vector<std::filesystem::path>{dir.path() / "models"});
  EXPECT_EQ(options->trainer.roots.write, dir.path() / "out");
  EXPECT_TRUE(std::filesystem::is_directory(dir.path() / "out"));

  flags.read_roots = {(dir.path() / "missing").string()};
  options = ResolveAgentOptions(flags);
  ASSERT_FALSE(options.ok());
  EXPECT_THAT(options.status().message(), HasSubstr("--read-root: " + flags.read_roots[0]));
}

}  // namespace
}  // namespace qlorad::agent
