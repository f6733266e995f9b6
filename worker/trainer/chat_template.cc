#include "worker/trainer/chat_template.h"

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
      return InvalidArgument(Where(i) + ".role: this chat template needs turns alternating "
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
  for (const ChatMessage& m : messages) {
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

StatusOr<std::vector<TextSegment>> RenderMistral(const ChatTemplate& chat,
                                                 const std::vector<ChatMessage>& messages) {
  if (messages[0].role == "system") {
    return InvalidArgument(Where(0) +
                           ".role: the mistral chat template has no system role (use llama2 or "
                           "fold the system text into the first user message)");
  }
  QLORAD_RETURN_IF_ERROR(CheckAlternating(messages, 0));
  std::vector<TextSegment> out;
  Add(out, chat.bos_token, false);
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      Add(out, "[INST] " + m.content + " [/INST]", false);
    } else {
      Add(out, m.content + chat.eos_token, true);
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
  if (name == "chatml") return ChatFamily::kChatml;
  if (name == "mistral") return ChatFamily::kMistral;
  if (name == "llama2") return ChatFamily::kLlama2;
  return InvalidArgument("data.chat_template: '" + name +
                         "' is not one of auto, llama3, chatml, mistral, llama2");
}

StatusOr<ChatFamily> ChatFamilyOfTemplate(const std::string& jinja) {
  // Each family's turn markers; checked from the most specific, since templates quote others'.
  if (jinja.find("<|start_header_id|>") != std::string::npos) return ChatFamily::kLlama3;
  if (jinja.find("<|im_start|>") != std::string::npos) return ChatFamily::kChatml;
  if (jinja.find("<<SYS>>") != std::string::npos) return ChatFamily::kLlama2;
  if (jinja.find("[INST]") != std::string::npos) return ChatFamily::kMistral;
  return InvalidArgument(
      "data.chat_template: the model's chat template is not one we reproduce (llama3, chatml, "
      "mistral, llama2); name one of those in data.chat_template");
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

StatusOr<std::vector<TextSegment>> RenderChat(const ChatTemplate& chat,
                                              const std::vector<ChatMessage>& messages) {
  QLORAD_RETURN_IF_ERROR(CheckRoles(messages));
  switch (chat.family) {
    case ChatFamily::kLlama3:
      return RenderLlama3(chat, messages);
    case ChatFamily::kChatml:
      return RenderChatml(chat, messages);
    case ChatFamily::kMistral:
      return RenderMistral(chat, messages);
    case ChatFamily::kLlama2:
      return RenderLlama2(chat, messages);
  }
  return Internal("unknown chat family");
}

}  // namespace qlorad::trainer
