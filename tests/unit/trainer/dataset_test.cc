#include "worker/trainer/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/tokenizer.h"

namespace qlorad::trainer {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;
using testing::WriteFile;

DataSpec SpecFor(const std::string& path) {
  DataSpec spec;
  spec.path = path;
  return spec;
}

TEST(DatasetTest, ReadsIdsLabelsAndText) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path,
            "{\"input_ids\": [1, 2, 3]}\n"
            "\n"
            "{\"input_ids\": [4, 5], \"labels\": [-100, 5]}\n"
            "{\"text\": \"h\\u00e9\"}\n");
  auto data = LoadJsonlDataset(SpecFor(path), 320);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  ASSERT_EQ(data->documents.size(), 3u);
  EXPECT_EQ(data->documents[0].labels, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(data->documents[1].labels, (std::vector<int64_t>{-100, 5}));
  // UTF-8: 'h', then two bytes for e-acute, wrapped in BOS/EOS.
  EXPECT_EQ(data->documents[2].input_ids, (std::vector<int64_t>{kBosId, 'h', 0xC3, 0xA9, kEosId}));
}

TEST(DatasetTest, BadLineNamesFileAndLine) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"input_ids\": [1, 2", "not valid JSON"},
      {"{\"input_ids\": [1, 999]}", "input_ids[1] = 999 is outside the vocabulary"},
      {"{\"input_ids\": [1, 2], \"labels\": [1]}", "labels has 1 entries"},
      {"{\"prompt\": \"x\"}", "expected an \"input_ids\" or a \"text\" key"},
      {"{\"input_ids\": []}", "input_ids is empty"},
      {"[1, 2]", "expected a JSON object"},
  };
  for (const auto& [line, why] : cases) {
    WriteFile(path, "{\"text\": \"ok\"}\n\n" + line + "\n");
    auto data = LoadJsonlDataset(SpecFor(path), 320);
    ASSERT_FALSE(data.ok()) << line;
    EXPECT_EQ(data.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(data.status().message(), HasSubstr(path + ":3: ")) << line;
    EXPECT_THAT(data.status().message(), HasSubstr(why)) << line;
  }
}

TEST(DatasetTest, SkipBadLinesCountsThem) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path, "{\"text\": \"ok\"}\nnot json\n{\"text\": \"fine\"}\n");
  DataSpec spec = SpecFor(path);
  spec.skip_bad_lines = true;
  auto data = LoadJsonlDataset(spec, 320);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->documents.size(), 2u);
  EXPECT_EQ(data->skipped_lines, 1);
}

TEST(DatasetTest, EmptyDatasetNamesDataPath) {
  TempDir dir;
  const std::string path = dir / "empty.jsonl";
  WriteFile(path, "\n  \n");
  auto data = LoadJsonlDataset(SpecFor(path), 320);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr("data.path: " + path));
}

TEST(DatasetTest, MissingFileAndUnsupportedFormatNameTheField) {
  auto missing = LoadJsonlDataset(SpecFor("/nonexistent.jsonl"), 320);
  EXPECT_THAT(missing.status().message(), HasSubstr("data.path"));
  DataSpec spec = SpecFor("/nonexistent.jsonl");
  spec.format = "alpaca";
  EXPECT_THAT(LoadJsonlDataset(spec, 320).status().message(), HasSubstr("data.format"));
}

TEST(DatasetTest, TextNeedsAVocabularyWithTheByteIds) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path, "{\"text\": \"a\"}\n");
  auto data = LoadJsonlDataset(SpecFor(path), 100);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr(path + ":1: "));
}

}  // namespace
}  // namespace qlorad::trainer
