#include "worker/trainer/data/chat_template.h"

namespace qlorad::trainer {

namespace {

// Jinja's trim and Python's str.strip() on the ASCII whitespace chat text carries.
std::string Strip(const std::string& s) {
  const char* space = " \t\n\r\f\v";
  const size_t first = s.find_first_not_of(space);
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(space) - first + 1);
}

std::string Where(size_t i) {
  return "messages[" + std::to_string(i) + "]";
}

Status CheckRoles(const std::vector<ChatMessage>& messages) {
  if (messages.empty()) return InvalidArgument("messages: the conversation is empty");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role == "tool" || role == "ipython") {
      return InvalidArgument(Where(i) + ".role: '" + role +
                             "': tool turns are not supported yet (only system, user, assistant)");
    }
    if (role != "system" && role != "user" && role != "assistant") {
      return InvalidArgument(Where(i) + ".role: '" + role +
                             "' is not one of system, user, assistant");
    }
    if (role == "system" && i != 0) {
      return InvalidArgument(Where(i) + ".role: a system message may only come first");
    }
  }
  return Status();
}

// The [INST] templates raise unless turns go user, assistant, user, ... (after an optional system).
Status CheckAlternating(const std::vector<ChatMessage>& messages, size_t first) {
  for (size_t i = first; i < messages.size(); ++i) {
    const char* want = (i - first) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != want) {
      return InvalidArgument(Where(i) +
                             ".role: this chat template needs turns alternating "
                             "user/assistant; expected " +
                             want + ", got " + messages[i].role);
    }
  }
  return Status();
}

void Add(std::vector<TextSegment>& out, std::string text, bool trained) {
  if (!out.empty() && out.back().trained == trained) {
    out.back().text += text;
  } else {
    out.push_back({std::move(text), trained});
  }
}

std::vector<TextSegment> RenderLlama3(const ChatTemplate& chat,
                                      const std::vector<ChatMessage>& messages) {
  std::vector<TextSegment> out;
  Add(out, chat.bos_token, false);
  size_t first = 0;
  if (chat.family == ChatFamily::kLlama31) {
    // The 3.1 templates write the system block even without a system message.
    const bool has_system = messages[0].role == "system";
    Add(out,
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: " +
            chat.date_string + "\n\n" + (has_system ? Strip(messages[0].content) : "") +
            "<|eot_id|>",
        false);
    first = has_system ? 1 : 0;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool trained = m.role == "assistant";
    Add(out, "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n", false);
    Add(out, Strip(m.content) + "<|eot_id|>", trained);
  }
  return out;
}

std::vector<TextSegment> RenderChatml(const ChatTemplate& chat,
                                      const std::vector<ChatMessage>& messages) {
  std::vector<TextSegment> out;
  if (messages[0].role != "system" && !chat.default_system.empty()) {
    Add(out, "<|im_start|>system\n" + chat.default_system + "<|im_end|>\n", false);
  }
  for (const ChatMessage& m : messages) {
    Add(out, "<|im_start|>" + m.role + "\n", false);
    Add(out, m.content + "<|im_end|>", m.role == "assistant");
    Add(out, "\n", false);
  }
  return out;
}

// The [INST] layouts of Mistral's templates, which differ only in spacing, trimming and where
// (if anywhere) the system text goes.
struct MistralLayout {
  const char* open;        // before a user turn
  const char* close;       // after it
  const char* reply_lead;  // before an assistant reply
  bool trim_reply;
  enum { kNoSystem, kFirstUser, kLastMessage } system;
};

MistralLayout LayoutOf(ChatFamily family) {
  switch (family) {
    case ChatFamily::kMistralV02:
      return {" [INST] ", " [/INST]", " ", false, MistralLayout::kFirstUser};
    case ChatFamily::kMistralV03:
      return {"[INST] ", "[/INST]", " ", true, MistralLayout::kLastMessage};
    default:
      return {"[INST] ", " [/INST]", "", false, MistralLayout::kNoSystem};
  }
}

StatusOr<std::vector<TextSegment>> RenderMistral(const ChatTemplate& chat,
                                                 const std::vector<ChatMessage>& messages) {
  const MistralLayout layout = LayoutOf(chat.family);
  const bool has_system = messages[0].role == "system";
  if (has_system && layout.system == MistralLayout::kNoSystem) {
    return InvalidArgument(Where(0) +
                           ".role: the mistral chat template has no system role (use llama2 or "
                           "fold the system text into the first user message)");
  }
  const size_t first = has_system ? 1 : 0;
  QLORAD_RETURN_IF_ERROR(CheckAlternating(messages, first));
  std::vector<TextSegment> out;
  Add(out, chat.bos_token, false);
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      // v0.3's template writes the system text only when a user turn is the very last message
      // (a generation prompt), so a conversation ending in a reply drops it, as transformers does.
      const bool with_system =
          has_system &&
          ((layout.system == MistralLayout::kFirstUser && i == first) ||
           (layout.system == MistralLayout::kLastMessage && i + 1 == messages.size()));
      const std::string system = with_system ? messages[0].content + "\n\n" : "";
      Add(out, layout.open + system + m.content + layout.close, false);
    } else {
      Add(out,
          layout.reply_lead + (layout.trim_reply ? Strip(m.content) : m.content) + chat.eos_token,
          true);
    }
  }
  return out;
}

StatusOr<std::vector<TextSegment>> RenderLlama2(const ChatTemplate& chat,
                                                const std::vector<ChatMessage>& messages) {
  const bool has_system = messages[0].role == "system";
  const size_t first = has_system ? 1 : 0;
  QLORAD_RETURN_IF_ERROR(CheckAlternating(messages, first));
  std::vector<TextSegment> out;
  for (size_t i = first; i < messages.size(); ++i) {
    std::string content = messages[i].content;
    if (i == first && has_system) {
      content = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + content;
    }
    if (messages[i].role == "user") {
      Add(out, chat.bos_token + "[INST] " + Strip(content) + " [/INST]", false);
    } else {
      Add(out, " " + Strip(content) + " " + chat.eos_token, true);
    }
  }
  return out;
}

}  // namespace

StatusOr<ChatFamily> ChatFamilyByName(const std::string& name) {
  if (name == "llama3") return ChatFamily::kLlama3;
  if (name == "llama3.1") return ChatFamily::kLlama31;
  if (name == "chatml") return ChatFamily::kChatml;
  if (name == "mistral") return ChatFamily::kMistral;
  if (name == "mistral-v0.2") return ChatFamily::kMistralV02;
  if (name == "mistral-v0.3") return ChatFamily::kMistralV03;
  if (name == "llama2") return ChatFamily::kLlama2;
  return InvalidArgument("data.chat_template: '" + name +
                         "' is not one of auto, llama3, llama3.1, chatml, mistral, mistral-v0.2, "
                         "mistral-v0.3, llama2");
}

StatusOr<ChatFamily> ChatFamilyOfTemplate(const std::string& jinja) {
  const auto has = [&jinja](const char* text) { return jinja.find(text) != std::string::npos; };
  const Status unknown = InvalidArgument(
      "data.chat_template: the model's chat template is not one we reproduce (llama3, llama3.1, "
      "chatml, mistral, mistral-v0.2, mistral-v0.3, llama2); name one of those in "
      "data.chat_template");
  // Each family's turn markers; checked from the most specific, since templates quote others'.
  if (has("<|start_header_id|>")) {
    if (!has("Cutting Knowledge Date")) return ChatFamily::kLlama3;
    return has("Cutting Knowledge Date: December 2023") ? StatusOr<ChatFamily>(ChatFamily::kLlama31)
                                                        : StatusOr<ChatFamily>(unknown);
  }
  if (has("<|im_start|>")) return ChatFamily::kChatml;
  if (has("<<SYS>>")) return ChatFamily::kLlama2;
  // Mistral's templates told apart by the exact expression that writes a plain user turn.
  if (has("' [INST] ' + message['content'] + ' [/INST]'")) return ChatFamily::kMistralV02;
  if (has("\"[INST] \" + message[\"content\"] + \"[/INST]\"")) return ChatFamily::kMistralV03;
  if (has("'[INST] ' + message['content'] + ' [/INST]'")) return ChatFamily::kMistral;
  return unknown;
}

std::string DefaultSystemOfTemplate(const std::string& jinja) {
  const std::string open = "<|im_start|>system";
  const std::string close = "<|im_end|>";
  for (size_t at = jinja.find(open); at != std::string::npos; at = jinja.find(open, at + 1)) {
    size_t start = at + open.size();
    // The newline is a real one or a Jinja escape, depending on how the file was written.
    if (jinja.compare(start, 1, "\n") == 0) {
      start += 1;
    } else if (jinja.compare(start, 2, "\\n") == 0) {
      start += 2;
    } else {
      continue;
    }
    const size_t end = jinja.find(close, start);
    if (end == std::string::npos) continue;
    const std::string text = jinja.substr(start, end - start);
    // A literal prompt, not an expression such as "' + messages[0]['content'] + '".
    if (!text.empty() && text.find_first_of("'\"{}+") == std::string::npos) return text;
  }
  return "";
}

Status ReadTemplateDefaults(const std::string& jinja, ChatTemplate& chat) {
  if (chat.family == ChatFamily::kChatml) chat.default_system = DefaultSystemOfTemplate(jinja);
  if (chat.family != ChatFamily::kLlama31) return Status();
  const std::string key = "set date_string = \"";
  const size_t at = jinja.find(key);
  const size_t end = at == std::string::npos ? at : jinja.find('"', at + key.size());
  if (end == std::string::npos) {
    return InvalidArgument(
        "data.chat_template: the model's llama3.1 template has no literal date_string fallback "
        "(set date_string = \"...\")");
  }
  chat.date_string = jinja.substr(at + key.size(), end - at - key.size());
  return Status();
}

std::string FallbackBosToken(ChatFamily family) {
  switch (family) {
    case ChatFamily::kLlama3:
    case ChatFamily::kLlama31:
      return "<|begin_of_text|>";
    case ChatFamily::kChatml:
      return "";
    default:
      return "<s>";
  }
}

std::string FallbackEosToken(ChatFamily family) {
  return FallbackBosToken(family) == "<s>" ? "</s>" : "";
}

StatusOr<std::vector<TextSegment>> RenderChat(const ChatTemplate& chat,
                                              const std::vector<ChatMessage>& messages) {
  QLORAD_RETURN_IF_ERROR(CheckRoles(messages));
  switch (chat.family) {
    case ChatFamily::kLlama3:
    case ChatFamily::kLlama31:
      return RenderLlama3(chat, messages);
    case ChatFamily::kChatml:
      return RenderChatml(chat, messages);
    case ChatFamily::kMistral:
    case ChatFamily::kMistralV02:
    case ChatFamily::kMistralV03:
      return RenderMistral(chat, messages);
    case ChatFamily::kLlama2:
      return RenderLlama2(chat, messages);
  }
  return Internal("unknown chat family");
}

}  // namespace qlorad::trainer
