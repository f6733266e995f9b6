#include "client/cli/args.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>

namespace qlorad::cli {
namespace {

struct Result {
  ParsedArgs parsed;
  std::string out;
  std::string err;
};

Result Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "qloractl");
  std::ostringstream out, err;
  ParsedArgs parsed = ParseArgs(static_cast<int>(args.size()), args.data(), out, err);
  return {parsed, out.str(), err.str()};
}

class ArgsTest : public ::testing::Test {
 protected:
  // QLORAD_* from the environment running the tests must not leak in.
  static void Clear() {
    for (const char* name : {"QLORAD_SERVER", "QLORAD_TOKEN", "QLORAD_CA_FILE",
                             "QLORAD_CLIENT_CERT", "QLORAD_CLIENT_KEY"}) {
      unsetenv(name);
    }
  }
  void SetUp() override { Clear(); }
  void TearDown() override { Clear(); }
};

TEST_F(ArgsTest, SubmitWithFollowAndDefaults) {
  const Result r = Parse({"submit", "job.yaml", "--follow"});
  ASSERT_TRUE(r.parsed.options.has_value()) << r.err;
  EXPECT_EQ(r.parsed.options->command, Command::kSubmit);
  EXPECT_EQ(r.parsed.options->spec_file, "job.yaml");
  EXPECT_TRUE(r.parsed.options->follow);
  EXPECT_EQ(r.parsed.options->server, "127.0.0.1:50051");
  EXPECT_FALSE(r.parsed.options->json);
}

TEST_F(ArgsTest, GlobalOptionsBeforeOrAfterTheCommand) {
  const Result before = Parse({"--server", "host:1234", "--json", "status", "job-1"});
  ASSERT_TRUE(before.parsed.options.has_value()) << before.err;
  EXPECT_EQ(before.parsed.options->server, "host:1234");
  EXPECT_TRUE(before.parsed.options->json);
  EXPECT_EQ(before.parsed.options->command, Command::kStatus);
  EXPECT_EQ(before.parsed.options->job_id, "job-1");

  const Result after = Parse({"cancel", "job-2", "--json", "--server", "other:1"});
  ASSERT_TRUE(after.parsed.options.has_value()) << after.err;
  EXPECT_EQ(after.parsed.options->command, Command::kCancel);
  EXPECT_EQ(after.parsed.options->server, "other:1");
  EXPECT_TRUE(after.parsed.options->json);
}

TEST_F(ArgsTest, RetryFromTheCheckpointUnlessFromScratch) {
  const Result plain = Parse({"retry", "job-3"});
  ASSERT_TRUE(plain.parsed.options.has_value()) << plain.err;
  EXPECT_EQ(plain.parsed.options->command, Command::kRetry);
  EXPECT_EQ(plain.parsed.options->job_id, "job-3");
  EXPECT_FALSE(plain.parsed.options->from_scratch);
  EXPECT_FALSE(plain.parsed.options->follow);

  const Result over = Parse({"retry", "--from-scratch", "job-3", "-f", "--reconnect-timeout", "0"});
  ASSERT_TRUE(over.parsed.options.has_value()) << over.err;
  EXPECT_TRUE(over.parsed.options->from_scratch);
  EXPECT_TRUE(over.parsed.options->follow);
  EXPECT_EQ(over.parsed.options->reconnect_timeout_s, 0);
  EXPECT_EQ(Parse({"retry"}).parsed.exit_code, 2) << "the id is required";
}

TEST_F(ArgsTest, WorkersTakesNoArguments) {
  EXPECT_EQ(Parse({"workers", "--json"}).parsed.options->command, Command::kWorkers);
  EXPECT_EQ(Parse({"workers", "gpu0"}).parsed.exit_code, 2);
}

TEST_F(ArgsTest, CompletionForBashOrZshOnly) {
  const Result zsh = Parse({"completion", "zsh"});
  ASSERT_TRUE(zsh.parsed.options.has_value()) << zsh.err;
  EXPECT_EQ(zsh.parsed.options->command, Command::kCompletion);
  EXPECT_EQ(zsh.parsed.options->shell, "zsh");
  const Result fish = Parse({"completion", "fish"});
  EXPECT_EQ(fish.parsed.exit_code, 2);
  EXPECT_NE(fish.err.find("fish"), std::string::npos) << fish.err;
  EXPECT_EQ(Parse({"completion"}).parsed.exit_code, 2);
}

TEST_F(ArgsTest, ServerFromTheEnvironmentUnlessGiven) {
  setenv("QLORAD_SERVER", "envhost:7", 1);
  EXPECT_EQ(Parse({"jobs"}).parsed.options->server, "envhost:7");
  EXPECT_EQ(Parse({"--server", "flag:8", "jobs"}).parsed.options->server, "flag:8");
}

TEST_F(ArgsTest, TokenAndTlsFilesFromFlagsOrTheEnvironment) {
  setenv("QLORAD_TOKEN", "qlorad_env", 1);
  setenv("QLORAD_CA_FILE", "env-ca.pem", 1);
  const auto env = Parse({"jobs"}).parsed.options->security;
  EXPECT_EQ(env.token, "qlorad_env");
  EXPECT_EQ(env.ca_file, "env-ca.pem");
  const auto flags = Parse({"--token", "qlorad_flag", "--ca-file", "ca.pem", "--cert", "c.pem",
                            "--key", "c.key", "--tls", "jobs"})
                         .parsed.options->security;
  EXPECT_EQ(flags.token, "qlorad_flag");
  EXPECT_EQ(flags.ca_file, "ca.pem");
  EXPECT_EQ(flags.cert_file, "c.pem");
  EXPECT_EQ(flags.key_file, "c.key");
  EXPECT_TRUE(flags.tls);
}

TEST_F(ArgsTest, StatesRepeatedOrCommaSeparatedAnyCase) {
  const Result r = Parse({"jobs", "--state", "queued,RUNNING", "--state", "failed"});
  ASSERT_TRUE(r.parsed.options.has_value()) << r.err;
  EXPECT_EQ(r.parsed.options->states, (std::vector<std::string>{"queued", "running", "failed"}));
}

TEST_F(ArgsTest, WatchAndLogsOptions) {
  const Result watch = Parse({"watch", "job-3", "--from-step", "17"});
  ASSERT_TRUE(watch.parsed.options.has_value()) << watch.err;
  EXPECT_EQ(watch.parsed.options->command, Command::kWatch);
  EXPECT_EQ(watch.parsed.options->from_step, 17);

  const Result logs = Parse({"logs", "job-3", "-f", "--from-seq", "5"});
  ASSERT_TRUE(logs.parsed.options.has_value()) << logs.err;
  EXPECT_EQ(logs.parsed.options->command, Command::kLogs);
  EXPECT_TRUE(logs.parsed.options->follow);
  EXPECT_EQ(logs.parsed.options->from_seq, 5);
}

TEST_F(ArgsTest, UnknownCommandIsAUsageErrorNamingIt) {
  const Result r = Parse({"frobnicate"});
  EXPECT_FALSE(r.parsed.options.has_value());
  EXPECT_EQ(r.parsed.exit_code, 2);
  EXPECT_EQ(r.err,
            "error: The following argument was not expected: frobnicate\n"
            "Run 'qloractl --help' for usage.\n");
}

TEST_F(ArgsTest, NoCommandIsAUsageError) {
  const Result r = Parse({"--server", "x:1"});
  EXPECT_EQ(r.parsed.exit_code, 2);
  EXPECT_EQ(
      r.err,
      "error: a command is required (submit, jobs, status, cancel, retry, watch, logs, workers, "
      "completion)\n"
      "Run 'qloractl --help' for usage.\n");
}

TEST_F(ArgsTest, UsageErrorsAreJsonLinesWithJson) {
  for (const auto& args : std::vector<std::vector<const char*>>{
           {"--json"}, {"--json", "frobnicate"}, {"watch", "--json"}}) {
    const Result r = Parse(args);
    EXPECT_EQ(r.parsed.exit_code, 2);
    const auto line = nlohmann::json::parse(r.err);
    EXPECT_EQ(line["type"], "error");
    EXPECT_EQ(line["code"], "USAGE");
    EXPECT_EQ(line["exit_code"], 2);
    EXPECT_FALSE(line["message"].get<std::string>().empty());
  }
}

TEST_F(ArgsTest, ReconnectTimeoutForWatchAndSubmit) {
  EXPECT_EQ(Parse({"watch", "job-1"}).parsed.options->reconnect_timeout_s, 120);
  EXPECT_EQ(
      Parse({"watch", "job-1", "--reconnect-timeout", "5"}).parsed.options->reconnect_timeout_s, 5);
  EXPECT_EQ(Parse({"submit", "a.yaml", "-f", "--reconnect-timeout", "0"})
                .parsed.options->reconnect_timeout_s,
            0);
  EXPECT_EQ(Parse({"watch", "job-1", "--reconnect-timeout", "-1"}).parsed.exit_code, 2);
}

TEST_F(ArgsTest, BadArgumentsAreUsageErrors) {
  for (const auto& args : std::vector<std::vector<const char*>>{
           {"watch"},                                 // missing id
           {"submit"},                                // missing file
           {"jobs", "--state", "sleeping"},           // not a state
           {"watch", "job-1", "--from-step", "-1"},   // negative
           {"watch", "job-1", "--from-step", "ten"},  // not a number
           {"status", "job-1", "job-2"},              // one id only
           {"jobs", "submit", "x.yaml"}}) {           // one command only
    const Result r = Parse(args);
    EXPECT_FALSE(r.parsed.options.has_value()) << args[0];
    EXPECT_EQ(r.parsed.exit_code, 2) << args[0];
    EXPECT_TRUE(r.err.starts_with("error: ")) << r.err;
  }
}

TEST_F(ArgsTest, BadStateErrorNamesTheOptionAndTheValue) {
  const Result r = Parse({"jobs", "--state", "sleeping"});
  EXPECT_NE(r.err.find("--state"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sleeping"), std::string::npos) << r.err;
}

TEST_F(ArgsTest, HelpExitsZeroAndListsTheCommands) {
  const Result r = Parse({"--help"});
  EXPECT_FALSE(r.parsed.options.has_value());
  EXPECT_EQ(r.parsed.exit_code, 0);
  for (const char* word :
       {"submit", "jobs", "status", "cancel", "retry", "watch", "logs", "workers", "Exit codes"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word;
  }
  EXPECT_EQ(r.err, "");
}

}  // namespace
}  // namespace qlorad::cli
