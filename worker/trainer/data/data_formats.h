// The dataset record layouts (one JSON object per record) and what each turns into: token ids
// as given, or text segments marked trained or not, ready for the tokenizer.
//   text               {"text": "..."}
//   input_ids          {"input_ids": [...], "labels": [...]?}   (labels -100 = not trained)
//   alpaca             {"instruction": "...", "input": "..."?, "output": "..."}
//   messages           {"messages": [{"role": "system|user|assistant", "content": "..."}]}
//   sharegpt           {"conversations": [{"from": "system|human|gpt", "value": "..."}]}
//   prompt_completion  {"prompt": "...", "completion": "..."}
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/trainer/data/chat_template.h"

namespace qlorad::trainer {

enum class DataFormat { kText, kInputIds, kAlpaca, kMessages, kSharegpt, kPromptCompletion };

// data.format other than auto.
StatusOr<DataFormat> DataFormatByName(const std::string& name);
// data.format auto: from the record's keys; none or several matching is an error naming them.
StatusOr<DataFormat> DetectDataFormat(const nlohmann::json& record);
bool IsChatFormat(DataFormat format);

struct RecordText {
  std::vector<TextSegment> segments;
  bool add_special = true;  // the tokenizer's BOS; chat templates write their own
  bool append_eos = true;   // the document ends with EOS (trained) unless the text already did
};

// A text-bearing record (every format but input_ids); `chat` is needed for the chat formats.
// Errors name the field ("messages[1].content: ...").
StatusOr<RecordText> RecordToText(const nlohmann::json& record, DataFormat format,
                                  const ChatTemplate* chat);

}  // namespace qlorad::trainer
