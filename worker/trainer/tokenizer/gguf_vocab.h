// The tokenizer of a Hugging Face model directory as GGUF metadata wants it (tokenizer.ggml.*,
// tokenizer.chat_template), read the way llama.cpp's convert_hf_to_gguf.py reads it for byte-level
// BPE ("gpt2") vocabularies: Llama 3/3.x and Qwen2.
//
// - tokens: one per id up to config.json's vocab_size; an id the tokenizer does not use becomes
//   "[PAD<id>]" of type UNUSED; added tokens are CONTROL when special (or shaped like "<|...|>"),
//   else USER_DEFINED; the rest NORMAL.
// - merges: tokenizer.json's, "a b" strings (pairs are joined; a space inside a part is written
//   as U+0120, as gguf-py does).
// - the pre-tokenizer (tokenizer.ggml.pre) is recognized from tokenizer.json's split regex:
//   Llama 3's is "llama-bpe", Qwen2's "qwen2", GPT-2's byte-level regex "gpt2". llama.cpp picks
//   its own copy of the regex by that name, so an unknown one is refused rather than guessed.
// - bos/eos/unk/pad ids: tokenizer_config.json's <type>_token content looked up among
//   tokenizer.json's added tokens, else config.json's <type>_token_id; add_bos/add_eos from the
//   post-processor's template and tokenizer_config.json's add_<type>_token.
// - chat template: tokenizer_config.json's chat_template, else chat_template.jinja, else
//   chat_template.json.
//
// SentencePiece-style vocabularies (Llama 2, Mistral 7B: byte_fallback BPE with "▁" for spaces,
// tokenizer.ggml.model "llama" with per-token scores) are refused naming the file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

// llama.cpp's token types (llama_token_type / gguf.TokenType).
enum class GgufTokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct GgufVocab {
  std::string model = "gpt2";  // tokenizer.ggml.model
  std::string pre;             // tokenizer.ggml.pre
  std::vector<std::string> tokens;
  std::vector<int32_t> token_types;
  std::vector<std::string> merges;
  std::optional<uint32_t> bos_id, eos_id, unk_id, pad_id;
  std::optional<bool> add_bos, add_eos;
  std::optional<std::string> chat_template;
  std::vector<std::string> notes;  // what was left out and why, for the export's log
};

// `vocab_size` is config.json's (the embedding's rows); tokenizer ids must lie below it.
StatusOr<GgufVocab> ReadGgufVocab(const std::string& model_dir, int64_t vocab_size);

}  // namespace qlorad::trainer
