// ParseJson's depth bound: exactly at the limit parses, one level more is refused whatever the
// container, and bad JSON still says where it broke.
#include "worker/trainer/io/json_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

namespace qlorad::trainer {
namespace {

using ::testing::HasSubstr;

// `depth` nested containers around a number: [[1]] or {"k":{"k":1}}.
std::string Nested(int depth, bool objects) {
  std::string text;
  for (int i = 0; i < depth; ++i) text += objects ? "{\"k\":" : "[";
  text += "1";
  for (int i = 0; i < depth; ++i) text += objects ? "}" : "]";
  return text;
}

TEST(ParseJsonTest, AcceptsTheLimitAndRefusesOneLevelMore) {
  for (bool objects : {false, true}) {
    auto at_limit = ParseJson(Nested(kMaxJsonDepth, objects));
    ASSERT_TRUE(at_limit.ok()) << at_limit.status().ToString();
    EXPECT_EQ(at_limit->flatten().begin().value(), 1);
    auto over = ParseJson(Nested(kMaxJsonDepth + 1, objects));
    ASSERT_FALSE(over.ok());
    EXPECT_EQ(over.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(over.status().message(), "JSON nested deeper than 128 levels");
  }
}

TEST(ParseJsonTest, DepthOfAHundredThousandIsRefusedNotACrash) {
  std::istringstream in(Nested(100000, false));
  auto deep = ParseJson(in);
  ASSERT_FALSE(deep.ok());
  EXPECT_THAT(deep.status().message(), HasSubstr("nested deeper"));
}

TEST(ParseJsonTest, BadJsonSaysWhereItBroke) {
  auto bad = ParseJson(std::string("{\"a\": [1, 2"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("not valid JSON: "));
  EXPECT_THAT(bad.status().message(), HasSubstr("line 1"));
}

}  // namespace
}  // namespace qlorad::trainer
