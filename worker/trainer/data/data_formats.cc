#include "worker/trainer/data/data_formats.h"

namespace qlorad::trainer {

namespace {

using nlohmann::json;

struct FormatInfo {
  DataFormat format;
  const char* name;
  std::vector<const char*> keys;  // all present: the record is in this format
};

const std::vector<FormatInfo>& Formats() {
  static const std::vector<FormatInfo> formats = {
      {DataFormat::kText, "text", {"text"}},
      {DataFormat::kInputIds, "input_ids", {"input_ids"}},
      {DataFormat::kAlpaca, "alpaca", {"instruction", "output"}},
      {DataFormat::kMessages, "messages", {"messages"}},
      {DataFormat::kSharegpt, "sharegpt", {"conversations"}},
      {DataFormat::kPromptCompletion, "prompt_completion", {"prompt", "completion"}},
  };
  return formats;
}

StatusOr<std::string> StringField(const json& object, const std::string& key,
                                  const std::string& where, bool optional = false) {
  if (!object.contains(key)) {
    if (optional) return std::string();
    return InvalidArgument(where + key + ": missing");
  }
  if (!object[key].is_string()) return InvalidArgument(where + key + ": must be a string");
  return object[key].get<std::string>();
}

// Stanford Alpaca's prompt layout, the usual one for instruction data without a chat model.
std::string AlpacaPrompt(const std::string& instruction, const std::string& input) {
  if (input.empty()) {
    return "Below is an instruction that describes a task. Write a response that appropriately "
           "completes the request.\n\n### Instruction:\n" +
           instruction + "\n\n### Response:\n";
  }
  return "Below is an instruction that describes a task, paired with an input that provides "
         "further context. Write a response that appropriately completes the request.\n\n"
         "### Instruction:\n" +
         instruction + "\n\n### Input:\n" + input + "\n\n### Response:\n";
}

// messages (role/content) and ShareGPT (from/value with human/gpt) differ only in names.
StatusOr<std::vector<ChatMessage>> ReadConversation(const json& record, DataFormat format) {
  const bool sharegpt = format == DataFormat::kSharegpt;
  const std::string list = sharegpt ? "conversations" : "messages";
  const std::string role_key = sharegpt ? "from" : "role";
  const std::string content_key = sharegpt ? "value" : "content";
  if (!record.contains(list)) return InvalidArgument(list + ": missing");
  const json& turns = record[list];
  if (!turns.is_array()) return InvalidArgument(list + ": must be an array of turns");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < turns.size(); ++i) {
    const std::string where = list + "[" + std::to_string(i) + "].";
    if (!turns[i].is_object())
      return InvalidArgument(where.substr(0, where.size() - 1) + ": must be an object");
    // A tool call rides on an assistant turn whose text may be empty: formatting the text alone
    // would silently train on a reply the model never gave.
    if (turns[i].contains("tool_calls") && !turns[i]["tool_calls"].is_null()) {
      return InvalidArgument(where +
                             "tool_calls: tool calls are not supported yet (only system, user and "
                             "assistant text turns)");
    }
    QLORAD_ASSIGN_OR_RETURN(std::string role, StringField(turns[i], role_key, where));
    QLORAD_ASSIGN_OR_RETURN(std::string content, StringField(turns[i], content_key, where));
    if (sharegpt) {
      if (role == "human") {
        role = "user";
      } else if (role == "gpt") {
        role = "assistant";
      } else if (role != "system") {
        return InvalidArgument(where + "from: '" + role + "' is not one of system, human, gpt");
      }
    }
    messages.push_back({role, content});
  }
  return messages;
}

}  // namespace

StatusOr<DataFormat> DataFormatByName(const std::string& name) {
  for (const FormatInfo& f : Formats()) {
    if (name == f.name) return f.format;
  }
  return InvalidArgument("data.format: '" + name +
                         "' is not one of auto, text, input_ids, alpaca, messages, sharegpt, "
                         "prompt_completion");
}

StatusOr<DataFormat> DetectDataFormat(const json& record) {
  if (!record.is_object()) return InvalidArgument("expected a JSON object");
  std::vector<const FormatInfo*> matches;
  for (const FormatInfo& f : Formats()) {
    bool all = true;
    for (const char* key : f.keys) all = all && record.contains(key);
    if (all) matches.push_back(&f);
  }
  if (matches.size() == 1) return matches[0]->format;
  std::string keys;
  for (const auto& [key, value] : record.items()) keys += (keys.empty() ? "" : ", ") + key;
  if (matches.empty()) {
    return InvalidArgument(
        "data.format: auto cannot tell the format from the first record's keys (" + keys +
        "); expected text, input_ids, instruction+output (alpaca), messages, conversations "
        "(sharegpt) or prompt+completion");
  }
  std::string names;
  for (const FormatInfo* f : matches) names += (names.empty() ? "" : ", ") + std::string(f->name);
  return InvalidArgument("data.format: auto is ambiguous: the first record's keys (" + keys +
                         ") fit " + names + "; set data.format");
}

bool IsChatFormat(DataFormat format) {
  return format == DataFormat::kMessages || format == DataFormat::kSharegpt;
}

StatusOr<RecordText> RecordToText(const json& record, DataFormat format, const ChatTemplate* chat) {
  if (!record.is_object()) return InvalidArgument("expected a JSON object");
  RecordText out;
  switch (format) {
    case DataFormat::kText: {
      QLORAD_ASSIGN_OR_RETURN(std::string text, StringField(record, "text", ""));
      out.segments.push_back({std::move(text), true});
      return out;
    }
    case DataFormat::kAlpaca: {
      QLORAD_ASSIGN_OR_RETURN(std::string instruction, StringField(record, "instruction", ""));
      QLORAD_ASSIGN_OR_RETURN(std::string input, StringField(record, "input", "", true));
      QLORAD_ASSIGN_OR_RETURN(std::string output, StringField(record, "output", ""));
      out.segments.push_back({AlpacaPrompt(instruction, input), false});
      out.segments.push_back({std::move(output), true});
      return out;
    }
    case DataFormat::kPromptCompletion: {
      QLORAD_ASSIGN_OR_RETURN(std::string prompt, StringField(record, "prompt", ""));
      QLORAD_ASSIGN_OR_RETURN(std::string completion, StringField(record, "completion", ""));
      out.segments.push_back({std::move(prompt), false});
      out.segments.push_back({std::move(completion), true});
      return out;
    }
    case DataFormat::kMessages:
    case DataFormat::kSharegpt: {
      if (chat == nullptr) return Internal("a chat format needs a chat template");
      QLORAD_ASSIGN_OR_RETURN(std::vector<ChatMessage> messages, ReadConversation(record, format));
      QLORAD_ASSIGN_OR_RETURN(out.segments, RenderChat(*chat, messages));
      out.add_special = false;
      out.append_eos = false;
      return out;
    }
    case DataFormat::kInputIds:
      break;
  }
  return Internal("input_ids records carry no text");
}

}  // namespace qlorad::trainer
