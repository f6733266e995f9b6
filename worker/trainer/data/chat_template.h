// Chat formatting for the model families whose templates we reproduce: llama3, llama3.1
// (3.1/3.2/3.3: the dated system header), chatml (Qwen2), mistral (Instruct v0.1/v0.2 as first
// shipped), mistral-v0.2 (its later template: the system text opens the first user turn),
// mistral-v0.3 (v3 tokenizer: the system text opens the LAST user turn) and llama2. A conversation
// becomes text segments, each marked as trained (an assistant reply and its end-of-turn token) or
// not (system, user, headers), so that train-on-completions-only can mask the rest. The rendered
// text equals what transformers' apply_chat_template produces with those families' own Jinja
// templates (tests/python checks it).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

enum class ChatFamily { kLlama3, kLlama31, kChatml, kMistral, kMistralV02, kMistralV03, kLlama2 };

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
  // llama3.1: the "Today Date: " of the system header. The templates fall back to this literal when
  // the caller passes no date_string (newer ones ask strftime_now first, which would make training
  // data depend on the day it was prepared), so we always use the template's literal.
  std::string date_string = "26 Jul 2024";
};

// data.chat_template by name: llama3 | llama3.1 | chatml | mistral | mistral-v0.2 | mistral-v0.3 |
// llama2.
StatusOr<ChatFamily> ChatFamilyByName(const std::string& name);
// Recognizes the family from a Jinja template's text (tokenizer_config.json's chat_template).
StatusOr<ChatFamily> ChatFamilyOfTemplate(const std::string& jinja);
// chatml: the literal default system prompt inside the template, if it has one.
std::string DefaultSystemOfTemplate(const std::string& jinja);
// What the model's own template fixes beyond its family: chatml's default system prompt and
// llama3.1's date_string fallback. An error names data.chat_template.
Status ReadTemplateDefaults(const std::string& jinja, ChatTemplate& chat);
// The family's usual special tokens, for a tokenizer that names none (the byte-level demo one).
std::string FallbackBosToken(ChatFamily family);
std::string FallbackEosToken(ChatFamily family);

// Errors name the message ("messages[2].role: ...").
StatusOr<std::vector<TextSegment>> RenderChat(const ChatTemplate& chat,
                                              const std::vector<ChatMessage>& messages);

}  // namespace qlorad::trainer
