// Chat formatting for the model families whose templates we reproduce: llama3, chatml (Qwen2),
// mistral (Instruct v0.1/v0.2) and llama2. A conversation becomes text segments, each marked as
// trained (an assistant reply and its end-of-turn token) or not (system, user, headers), so that
// train-on-completions-only can mask the rest. The rendered text equals what transformers'
// apply_chat_template produces with those families' own Jinja templates (tests/python checks it).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

enum class ChatFamily { kLlama3, kChatml, kMistral, kLlama2 };

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

struct TextSegment {
  std::string text;
  bool trained = false;
};

struct ChatTemplate {
  ChatFamily family = ChatFamily::kChatml;
  std::string bos_token;  // the tokenizer's, as text ("<|begin_of_text|>", "<s>")
  std::string eos_token;
  // chatml: the system turn the template inserts when the conversation has none (Qwen2's "You
  // are a helpful assistant."); empty for none.
  std::string default_system;
};

// data.chat_template by name: llama3 | chatml | mistral | llama2.
StatusOr<ChatFamily> ChatFamilyByName(const std::string& name);
// Recognizes the family from a Jinja template's text (tokenizer_config.json's chat_template).
StatusOr<ChatFamily> ChatFamilyOfTemplate(const std::string& jinja);
// chatml: the literal default system prompt inside the template, if it has one.
std::string DefaultSystemOfTemplate(const std::string& jinja);

// Errors name the message ("messages[2].role: ...").
StatusOr<std::vector<TextSegment>> RenderChat(const ChatTemplate& chat,
                                              const std::vector<ChatMessage>& messages);

}  // namespace qlorad::trainer
