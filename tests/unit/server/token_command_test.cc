// `qlorad token` as an operator types it: parsed by CLI11 with the coordinator's flags, run on a
// real store. Expiry flags (--expires-in, --expires-at) and what `list` shows of them.
#include "server/token_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "server/coordinator.h"
#include "server/store.h"
#include "server/token_time.h"
#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;

struct Ran {
  int code = 0;
  std::string out, err;
};

// `qlorad ARGS...`, with CLI11's parse errors as the exit code and message it would print.
Ran Qlorad(std::vector<std::string> args) {
  CLI::App app;
  TokenCommand command;
  AddTokenCommand(app, command);
  std::reverse(args.begin(), args.end());  // CLI11 takes its arguments last first
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return {1, "", e.what()};
  }
  std::ostringstream out, err;
  const int code = RunTokenCommand(command, out, err);
  return {code, out.str(), err.str()};
}

std::vector<TokenRecord> Tokens(const std::string& db) {
  auto store = Store::Open(db);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return *(*store)->ListTokens();
}

TEST(TokenTimeTest, UtcTimesRoundTripAndOthersAreRefusedNamingTheFlag) {
  EXPECT_EQ(FormatTokenTime(1577836800000), "2020-01-01T00:00:00Z");
  EXPECT_EQ(*ParseTokenTime("2020-01-01T00:00:00Z", "--expires-at"), 1577836800000);
  EXPECT_EQ(*ParseTokenTime("2027-01-31T23:59:59Z", "--expires-at"), 1801439999000);
  for (const char* bad : {"2020-01-01", "2020-01-01T00:00:00", "2020-01-01T00:00:00+01:00",
                          "2027-02-30T00:00:00Z", "2020-01-01T00:00:00Z ", "tomorrow", ""}) {
    auto parsed = ParseTokenTime(bad, "--expires-at");
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(),
                HasSubstr(std::string("--expires-at: '") + bad + "' is not a UTC time like"));
  }
}

TEST(TokenCommandTest, ExpiresInIsALifetimeFromNow) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  const int64_t before = NowUnixMs();
  const Ran made = Qlorad({"token", "create", "--db", db, "--user", "ada", "--expires-in", "30d"});
  const int64_t after = NowUnixMs();
  ASSERT_EQ(made.code, 0) << made.err;
  EXPECT_THAT(made.out, ::testing::StartsWith("qlorad_"));
  const auto tokens = Tokens(db);
  ASSERT_EQ(tokens.size(), 1u);
  ASSERT_TRUE(tokens[0].expires_unix_ms.has_value());
  const int64_t month_ms = int64_t{30} * 24 * 3600 * 1000;
  EXPECT_GE(*tokens[0].expires_unix_ms, before + month_ms);
  EXPECT_LE(*tokens[0].expires_unix_ms, after + month_ms);
  EXPECT_THAT(made.err, HasSubstr("expires " + FormatTokenTime(*tokens[0].expires_unix_ms)));
  for (const auto& [flag, seconds] : std::vector<std::pair<std::string, int64_t>>{
           {"12h", 12 * 3600}, {"90m", 90 * 60}, {"45s", 45}, {"2w", 14 * 24 * 3600}}) {
    TempDir other;
    ASSERT_EQ(Qlorad({"token", "create", "--db", other.File("q.db"), "--user", "ada",
                      "--expires-in", flag})
                  .code,
              0)
        << flag;
    const TokenRecord t = Tokens(other.File("q.db")).at(0);
    EXPECT_EQ(*t.expires_unix_ms - t.created_unix_ms, seconds * 1000) << flag;
  }
}

TEST(TokenCommandTest, ListShowsEachExpiryAndWhetherItHasPassed) {
  TempDir dir;
  const std::string db = dir.File("q.db");
  const Ran old = Qlorad(
      {"token", "create", "--db", db, "--user", "old", "--expires-at", "2020-01-01T00:00:00Z"});
  ASSERT_EQ(old.code, 0) << old.err;
  EXPECT_THAT(old.err, HasSubstr("expires 2020-01-01T00:00:00Z (already expired)"));
  ASSERT_EQ(Qlorad({"token", "create", "--db", db, "--user", "forever"}).code, 0);
  ASSERT_EQ(Qlorad({"token", "create", "--db", db, "--user", "gone"}).code, 0);
  const std::string gone_id = Tokens(db).back().id;
  ASSERT_EQ(Qlorad({"token", "revoke", gone_id, "--db", db}).code, 0);

  const Ran list = Qlorad({"token", "list", "--db", db});
  ASSERT_EQ(list.code, 0) << list.err;
  std::map<std::string, std::vector<std::string>> rows;
  std::istringstream lines(list.out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::vector<std::string> row{std::istream_iterator<std::string>(words), {}};
    ASSERT_EQ(row.size(), 7u) << line;
    rows[row[2]] = row;
  }
  EXPECT_EQ(rows["NAME"], (std::vector<std::string>{"ID", "ROLE", "NAME", "CREATED", "EXPIRES",
                                                    "REVOKED", "STATE"}));
  EXPECT_EQ(rows["old"][4], "2020-01-01T00:00:00Z");
  EXPECT_EQ(rows["old"][6], "expired");
  EXPECT_EQ(rows["forever"][4], "never");
  EXPECT_EQ(rows["forever"][6], "valid");
  EXPECT_EQ(rows["gone"][6], "revoked");
}

TEST(TokenCommandTest, BadExpiriesAreRefusedNamingTheFlagAndMakeNoToken) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--expires-in", "30x"}, "--expires-in: x unit not recognized"},
      {{"--expires-in", "30"}, "--expires-in: Missing mandatory unit"},
      {{"--expires-in", "1.5h"}, "--expires-in: "},
      {{"--expires-in", "0s"}, "--expires-in: a lifetime must be from 1s to 100 years"},
      {{"--expires-in", "-1d"}, "--expires-in: a lifetime must be from 1s to 100 years"},
      {{"--expires-in", "101000d"}, "--expires-in: a lifetime must be from 1s to 100 years"},
      {{"--expires-at", "2020-01-01"}, "--expires-at: '2020-01-01' is not a UTC time like"},
      {{"--expires-in", "1d", "--expires-at", "2030-01-01T00:00:00Z"}, "--expires-in excludes"},
  };
  for (const auto& [flags, message] : cases) {
    TempDir dir;
    std::vector<std::string> args = {"token", "create", "--db", dir.File("q.db"), "--user", "ada"};
    args.insert(args.end(), flags.begin(), flags.end());
    const Ran ran = Qlorad(args);
    EXPECT_EQ(ran.code, 1) << flags[1];
    EXPECT_THAT(ran.err, HasSubstr(message)) << flags[1];
    EXPECT_EQ(ran.out, "") << flags[1];
    EXPECT_TRUE(Tokens(dir.File("q.db")).empty()) << flags[1];
  }
}

}  // namespace
}  // namespace qlorad::server::testing
