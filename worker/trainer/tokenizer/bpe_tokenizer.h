// A tokenizer loaded from a Hugging Face tokenizer.json: added tokens, then the normalizer and
// the pre-tokenizer, then BPE, then the post-processor's special tokens (BOS). Covers byte-level
// BPE as Llama 3 uses it and BPE with byte fallback and Metaspace (Llama 2, Mistral); an
// unsupported component is an error naming it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/trainer/tokenizer/bpe_tokenizer_added.h"
#include "worker/trainer/tokenizer/bpe_tokenizer_model.h"
#include "worker/trainer/tokenizer/bpe_tokenizer_normalizer.h"
#include "worker/trainer/tokenizer/bpe_tokenizer_post.h"
#include "worker/trainer/tokenizer/pretokenizer.h"

namespace qlorad::trainer {

class BpeTokenizer {
 public:
  static StatusOr<BpeTokenizer> Load(const std::string& path);
  // `file` names the source in errors.
  static StatusOr<BpeTokenizer> FromJson(const nlohmann::json& config, const std::string& file);

  // The ids of `text` (UTF-8). With `add_special`, the post-processor's tokens (BOS) are added and
  // special-token text becomes its token; without, special-token text is encoded as plain text
  // (Hugging Face: encode_special_tokens=True, add_special_tokens=False).
  StatusOr<std::vector<int64_t>> Encode(std::string_view text, bool add_special) const {
    return Encode(text, add_special, add_special);
  }
  // `add_affixes`: the post-processor's tokens; `match_special`: special-token text becomes its
  // token. Chat text is encoded with match_special alone (apply_chat_template's tokenization).
  // With `matches`, the added tokens matched in `text` (not those found after normalization) are
  // listed there in order, for EncodeSuffix.
  StatusOr<std::vector<int64_t>> Encode(std::string_view text, bool add_affixes, bool match_special,
                                        std::vector<AddedTokenMatch>* matches = nullptr) const;

  // Encode(text.substr(offset), add_affixes, match_special) as `head` followed by
  // whole[joins_at..], where `whole` and `matches` are what Encode(text, add_affixes,
  // match_special, &matches) gave. Only the text from `offset` to the next added token is encoded
  // again: added tokens are found left to right by position alone, so from the first one at or
  // after `offset` the suffix is cut (and encoded) as the whole text was, unless a token matched in
  // the whole text runs over `offset` (then the suffix is encoded in full).
  struct SuffixIds {
    std::vector<int64_t> head;
    size_t joins_at = 0;
  };
  StatusOr<SuffixIds> EncodeSuffix(std::string_view text, size_t offset,
                                   const std::vector<int64_t>& whole,
                                   const std::vector<AddedTokenMatch>& matches, bool add_affixes,
                                   bool match_special) const;

 private:
  BpeTokenizer(AddedTokens added, Normalizer normalizer, PreTokenizer pre, BpeModel model,
               SpecialAffixes affixes)
      : added_(std::move(added)),
        normalizer_(std::move(normalizer)),
        pre_(std::move(pre)),
        model_(std::move(model)),
        affixes_(std::move(affixes)) {}
  Status EncodePlain(std::string_view text, bool match_special, bool at_text_start,
                     std::vector<int64_t>& ids) const;
  AddedTokens added_;
  Normalizer normalizer_;
  PreTokenizer pre_;
  BpeModel model_;
  SpecialAffixes affixes_;  // the post-processor's ids around the text
};

}  // namespace qlorad::trainer
