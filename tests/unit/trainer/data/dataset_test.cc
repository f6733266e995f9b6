#include "worker/trainer/data/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/data/chat_template.h"
#include "worker/trainer/data/data_formats.h"
#include "worker/trainer/tokenizer/tokenizer.h"

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

// The tiny model has no tokenizer.json, so text goes through the byte-level tokenizer.
StatusOr<Dataset> Load(const DataSpec& spec, int64_t vocab_size = kByteVocabSize) {
  return LoadDataset(spec, "", {vocab_size, /*keep_text=*/true});
}

std::vector<int64_t> Bytes(const std::string& s) {
  return std::vector<int64_t>(s.begin(), s.end());
}

// The text of the trained tokens (byte ids only), to check which part of a record is labelled.
std::string TrainedText(const Document& d) {
  std::string out;
  for (int64_t l : d.labels) {
    if (l != kIgnoreLabel && l < 256) out += static_cast<char>(l);
  }
  return out;
}

TEST(DatasetTest, ReadsIdsAndLabels) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path,
            "{\"input_ids\": [1, 2, 3]}\n"
            "\n"
            "{\"input_ids\": [4, 5], \"labels\": [-100, 5]}\n");
  auto data = Load(SpecFor(path));
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  ASSERT_EQ(data->documents.size(), 2u);
  EXPECT_EQ(data->documents[0].labels, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(data->documents[1].labels, (std::vector<int64_t>{-100, 5}));
}

TEST(DatasetTest, TextIsByteTokenizedWithoutATokenizerJson) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path, "{\"text\": \"h\\u00e9\"}\n");
  auto data = Load(SpecFor(path));
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  // UTF-8: 'h', then two bytes for e-acute, wrapped in BOS/EOS; every token trained.
  const std::vector<int64_t> want = {kBosId, 'h', 0xC3, 0xA9, kEosId};
  EXPECT_EQ(data->documents[0].input_ids, want);
  EXPECT_EQ(data->documents[0].labels, want);
}

TEST(DatasetTest, JsonArrayFileAndRecordIndexInErrors) {
  TempDir dir;
  const std::string path = dir / "d.json";
  WriteFile(path, " [{\"text\": \"a\"}, {\"text\": \"b\"}]");
  auto data = Load(SpecFor(path));
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_EQ(data->documents.size(), 2u);
  WriteFile(path, "[{\"text\": \"a\"}, {\"text\": 7}]");
  auto bad = Load(SpecFor(path));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr(path + ": record 2: text: must be a string"));
}

TEST(DatasetTest, BadLineNamesFileLineAndField) {
  const std::string kChat =
      R"({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})";
  const std::string kShareGpt =
      R"({"conversations": [{"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}]})";
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"{\"input_ids\": [1]}", "{\"input_ids\": [1, 2", "not valid JSON"},
      {"{\"input_ids\": [1]}", "{\"input_ids\": [1, 999]}",
       "input_ids[1] = 999 is outside the vocabulary"},
      {"{\"input_ids\": [1]}", "{\"input_ids\": [1, 2], \"labels\": [1]}", "labels has 1 entries"},
      {"{\"input_ids\": [1]}", "{\"text\": \"x\"}", "input_ids: missing"},
      {"{\"input_ids\": [1]}", "{\"input_ids\": []}", "input_ids is empty"},
      {"{\"text\": \"ok\"}", "[1, 2]", "expected a JSON object"},
      {"{\"prompt\": \"p\", \"completion\": \"c\"}", "{\"prompt\": \"p\"}", "completion: missing"},
      {kChat, "{\"messages\": [{\"role\": \"user\"}]}", "messages[0].content: missing"},
      {kShareGpt, "{\"conversations\": [{\"from\": \"bot\", \"value\": \"x\"}]}",
       "conversations[0].from: 'bot' is not one of system, human, gpt"},
  };
  for (const auto& [first, line, why] : cases) {
    WriteFile(path, first + "\n\n" + line + "\n");
    DataSpec spec = SpecFor(path);
    spec.chat_template = "chatml";
    auto data = Load(spec);
    ASSERT_FALSE(data.ok()) << line;
    EXPECT_EQ(data.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(data.status().message(), HasSubstr(path + ":3: ")) << line;
    EXPECT_THAT(data.status().message(), HasSubstr(why)) << data.status().message();
  }
}

// A line nested 100,000 deep once overflowed the stack (SIGSEGV, naming nothing). It must be an
// error naming file:line, or a skipped line, in both layouts.
TEST(DatasetTest, DeeplyNestedRecordIsAnErrorNamingFileAndLine) {
  const int kDepth = 100000;
  const std::string deep =
      "{\"text\": " + std::string(kDepth, '[') + std::string(kDepth, ']') + "}";
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path, "{\"text\": \"ok\"}\n" + deep + "\n{\"text\": \"fine\"}\n");
  auto data = Load(SpecFor(path));
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(path + ":2: JSON nested deeper than 128 levels"));

  DataSpec skipping = SpecFor(path);
  skipping.skip_bad_lines = true;
  auto kept = Load(skipping);
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(kept->documents.size(), 2u);
  EXPECT_EQ(kept->skipped_lines, 1);

  const std::string array = dir / "d.json";
  WriteFile(array, "[{\"text\": \"ok\"}, " + deep + "]");
  auto whole = Load(SpecFor(array));
  ASSERT_FALSE(whole.ok());
  EXPECT_THAT(whole.status().message(), HasSubstr(array + ": JSON nested deeper than 128 levels"));
}

TEST(DatasetTest, SkipBadLinesCountsThem) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path, "{\"text\": \"ok\"}\nnot json\n{\"text\": 3}\n{\"text\": \"fine\"}\n");
  DataSpec spec = SpecFor(path);
  spec.skip_bad_lines = true;
  auto data = Load(spec);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->documents.size(), 2u);
  EXPECT_EQ(data->skipped_lines, 2);
}

TEST(DatasetTest, EmptyDatasetNamesDataPath) {
  TempDir dir;
  const std::string path = dir / "empty.jsonl";
  WriteFile(path, "\n  \n");
  auto data = Load(SpecFor(path));
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr("data.path: " + path));
}

TEST(DatasetTest, MissingFileAndUnknownNamesNameTheField) {
  auto missing = Load(SpecFor("/nonexistent.jsonl"));
  EXPECT_THAT(missing.status().message(), HasSubstr("data.path"));
  DataSpec spec = SpecFor("/nonexistent.jsonl");
  spec.format = "csv";
  EXPECT_THAT(Load(spec).status().message(), HasSubstr("data.format"));
  spec.format = "auto";
  spec.chat_template = "vicuna";
  EXPECT_THAT(Load(spec).status().message(), HasSubstr("data.chat_template"));
}

TEST(DatasetTest, TextNeedsAVocabularyWithTheByteIds) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path, "{\"text\": \"a\"}\n");
  auto data = Load(SpecFor(path), 100);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr(path + ":1: "));
  EXPECT_THAT(data.status().message(), HasSubstr("vocabulary"));
}

TEST(DataFormatTest, AutoDetectsFromKeysAndRefusesUnclearRecords) {
  using nlohmann::json;
  const std::vector<std::pair<json, DataFormat>> cases = {
      {{{"text", "x"}}, DataFormat::kText},
      {{{"input_ids", {1}}}, DataFormat::kInputIds},
      {{{"instruction", "i"}, {"input", ""}, {"output", "o"}}, DataFormat::kAlpaca},
      {{{"messages", json::array()}}, DataFormat::kMessages},
      {{{"conversations", json::array()}}, DataFormat::kSharegpt},
      {{{"prompt", "p"}, {"completion", "c"}}, DataFormat::kPromptCompletion},
  };
  for (const auto& [record, format] : cases) {
    auto got = DetectDataFormat(record);
    ASSERT_TRUE(got.ok()) << record.dump();
    EXPECT_EQ(*got, format) << record.dump();
  }
  auto both = DetectDataFormat({{"text", "x"}, {"messages", json::array()}});
  ASSERT_FALSE(both.ok());
  EXPECT_THAT(both.status().message(), HasSubstr("ambiguous"));
  EXPECT_THAT(both.status().message(), HasSubstr("text, messages"));
  auto unknown = DetectDataFormat({{"question", "q"}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("data.format: auto cannot tell"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("(question)"));
}

TEST(DatasetTest, PromptCompletionTrainsOnTheCompletionAndEos) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path, "{\"prompt\": \"Q: 2+2?\", \"completion\": \" A: 4\"}\n");
  auto data = Load(SpecFor(path));
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const Document& d = data->documents[0];
  std::vector<int64_t> want = {kBosId};
  for (int64_t b : Bytes("Q: 2+2? A: 4")) want.push_back(b);
  want.push_back(kEosId);
  EXPECT_EQ(d.input_ids, want);
  EXPECT_EQ(TrainedText(d), " A: 4");
  EXPECT_EQ(d.labels.back(), kEosId);
  EXPECT_EQ(d.labels.front(), kIgnoreLabel);

  DataSpec all = SpecFor(path);
  all.train_on_completions_only = false;
  auto every = Load(all);
  ASSERT_TRUE(every.ok());
  EXPECT_EQ(every->documents[0].labels, want);
}

TEST(DatasetTest, AlpacaUsesTheAlpacaPromptAndTrainsOnTheOutput) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path,
            "{\"instruction\": \"Add.\", \"input\": \"2 2\", \"output\": \"4\"}\n"
            "{\"instruction\": \"Say hi.\", \"output\": \"hi\"}\n");
  auto data = Load(SpecFor(path));
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_THAT(data->documents[0].text, HasSubstr("### Instruction:\nAdd.\n\n### Input:\n2 2\n\n"
                                                 "### Response:\n4"));
  EXPECT_EQ(TrainedText(data->documents[0]), "4");
  EXPECT_THAT(data->documents[1].text, ::testing::Not(HasSubstr("### Input")));
  EXPECT_EQ(TrainedText(data->documents[1]), "hi");
}

TEST(DatasetTest, ChatTrainsOnAssistantTurnsAndTheirEndOfTurn) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path,
            "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
            "{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": "
            "\"Hello\"}, {\"role\": \"user\", \"content\": \"Bye\"}, {\"role\": \"assistant\", "
            "\"content\": \"Ciao\"}]}\n");
  DataSpec spec = SpecFor(path);
  spec.chat_template = "chatml";
  auto data = Load(spec);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const Document& d = data->documents[0];
  EXPECT_EQ(d.text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
            "<|im_start|>assistant\nCiao<|im_end|>\n");
  EXPECT_EQ(TrainedText(d), "Hello<|im_end|>Ciao<|im_end|>");
  EXPECT_EQ(d.input_ids, Bytes(d.text));  // chat text carries its own specials: no BOS/EOS added

  // The same conversation in ShareGPT form renders the same.
  WriteFile(path,
            "{\"conversations\": [{\"from\": \"system\", \"value\": \"Be brief.\"}, "
            "{\"from\": \"human\", \"value\": \"Hi\"}, {\"from\": \"gpt\", \"value\": "
            "\"Hello\"}, {\"from\": \"human\", \"value\": \"Bye\"}, {\"from\": \"gpt\", "
            "\"value\": \"Ciao\"}]}\n");
  auto sharegpt = Load(spec);
  ASSERT_TRUE(sharegpt.ok()) << sharegpt.status().ToString();
  EXPECT_EQ(sharegpt->documents[0].input_ids, d.input_ids);
  EXPECT_EQ(sharegpt->documents[0].labels, d.labels);
}

TEST(DatasetTest, ChatNeedsATemplateAndATurnToTrainOn) {
  TempDir dir;
  const std::string path = dir / "d.jsonl";
  WriteFile(path, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n");
  auto no_template = Load(SpecFor(path));
  ASSERT_FALSE(no_template.ok());
  EXPECT_THAT(no_template.status().message(), HasSubstr("data.chat_template: auto"));
  DataSpec spec = SpecFor(path);
  spec.chat_template = "llama3";
  auto no_answer = Load(spec);
  ASSERT_FALSE(no_answer.ok());
  EXPECT_THAT(no_answer.status().message(), HasSubstr(path + ":1: nothing to train on"));
}

TEST(ChatTemplateTest, FamiliesAreRecognizedFromTemplateText) {
  EXPECT_EQ(*ChatFamilyOfTemplate("{{ '<|start_header_id|>' + message['role'] }}"),
            ChatFamily::kLlama3);
  EXPECT_EQ(*ChatFamilyOfTemplate("{{'<|im_start|>' + message['role'] + '\\n'}}"),
            ChatFamily::kChatml);
  EXPECT_EQ(*ChatFamilyOfTemplate("{{ '[INST] ' + content }}{{ '<<SYS>>\\n' }}"),
            ChatFamily::kLlama2);
  EXPECT_EQ(*ChatFamilyOfTemplate("{{ '[INST] ' + message['content'] + ' [/INST]' }}"),
            ChatFamily::kMistral);
  EXPECT_THAT(ChatFamilyOfTemplate("{{ message['content'] }}").status().message(),
              HasSubstr("data.chat_template"));
  // Qwen2's default system turn, with the newline escaped or not; an expression is not one.
  EXPECT_EQ(DefaultSystemOfTemplate("{{ '<|im_start|>system\\n' + messages[0]['content'] + "
                                    "'<|im_end|>' }}{{ '<|im_start|>system\\nYou are a helpful "
                                    "assistant.<|im_end|>\\n' }}"),
            "You are a helpful assistant.");
  EXPECT_EQ(DefaultSystemOfTemplate("{{'<|im_start|>system\n' + message }}<|im_end|>"), "");
}

TEST(ChatTemplateTest, InstTemplatesNeedAlternatingTurns) {
  ChatTemplate chat{ChatFamily::kMistral, "<s>", "</s>", ""};
  auto system = RenderChat(chat, {{"system", "s"}, {"user", "u"}});
  EXPECT_THAT(system.status().message(), HasSubstr("messages[0].role"));
  auto twice = RenderChat(chat, {{"user", "u"}, {"user", "u"}});
  EXPECT_THAT(twice.status().message(), HasSubstr("messages[1].role"));
  chat.family = ChatFamily::kLlama2;
  auto ok = RenderChat(chat, {{"system", "s"}, {"user", "u"}, {"assistant", " a "}});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[1].text, " a </s>");
  EXPECT_TRUE((*ok)[1].trained);
}

}  // namespace
}  // namespace qlorad::trainer
