#include "common/process/line_splitter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace qlorad::process {
namespace {

using ::testing::ElementsAre;

TEST(LineSplitterTest, JoinsLinesSplitAcrossReadsAndStripsCarriageReturns) {
  LineSplitter splitter;
  std::vector<std::string> lines;
  auto emit = [&](std::string_view l) { lines.emplace_back(l); };
  splitter.Feed("first\r\nsec", emit);
  EXPECT_THAT(lines, ElementsAre("first"));
  splitter.Feed("ond\n\nthird", emit);
  EXPECT_THAT(lines, ElementsAre("first", "second", ""));
  splitter.Finish(emit);
  EXPECT_THAT(lines, ElementsAre("first", "second", "", "third"));
}

TEST(LineSplitterTest, FinishWithNothingPendingEmitsNothing) {
  LineSplitter splitter;
  int calls = 0;
  auto emit = [&](std::string_view) { ++calls; };
  splitter.Feed("done\n", emit);
  splitter.Finish(emit);
  EXPECT_EQ(calls, 1);
}

TEST(LineSplitterTest, CutsOverlongLinesAtTheLimit) {
  LineSplitter splitter(4);
  std::vector<std::string> lines;
  auto emit = [&](std::string_view l) { lines.emplace_back(l); };
  splitter.Feed("abcdefghij\nxy\n", emit);
  EXPECT_THAT(lines, ElementsAre("abcd", "efgh", "ij", "xy"));
}

}  // namespace
}  // namespace qlorad::process
