// The tokenizer a dataset is encoded with: the model directory's tokenizer.json (with the special
// tokens and chat template of tokenizer_config.json / chat_template.jinja), or, for a model with
// no tokenizer.json (the tiny demo model), the byte-level tokenizer: UTF-8 bytes are ids 0-255,
// then three specials.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/trainer/tokenizer/bpe_tokenizer_added.h"

namespace qlorad::trainer {

inline constexpr int64_t kBosId = 256;
inline constexpr int64_t kEosId = 257;
inline constexpr int64_t kPadId = 258;
// 256 bytes + specials, rounded up to a multiple of 64 for friendlier matmul shapes.
inline constexpr int64_t kByteVocabSize = 320;

// BOS, the bytes of `text`, EOS.
std::vector<int64_t> ByteTokenize(const std::string& text);

class BpeTokenizer;

class ModelTokenizer {
 public:
  // model_dir/tokenizer.json when it exists, else the byte-level tokenizer.
  static StatusOr<ModelTokenizer> ForModelDir(const std::string& model_dir);
  static ModelTokenizer ByteLevel();

  // Special-token text (bos_token, "<|im_end|>") always becomes its token. With `add_special`, the
  // tokenizer's own additions (BOS from the post-processor; BOS and EOS for the byte tokenizer)
  // are added, as Hugging Face's add_special_tokens=True does.
  StatusOr<std::vector<int64_t>> Encode(std::string_view text, bool add_special) const;

  // A text's ids with what lets SharedSuffix reuse them.
  struct Encoding {
    std::vector<int64_t> ids;
    std::vector<AddedTokenMatch> added;  // where added tokens matched (BPE tokenizers)
  };
  StatusOr<Encoding> EncodeForSuffixes(std::string_view text, bool add_special) const;
  // How many of the last ids of `whole` (EncodeForSuffixes(text, add_special)) the encoding of
  // text.substr(offset) ends with too, without encoding all of that suffix again: what a dataset
  // asks at every boundary between trained and untrained text, so a long chat costs one encoding
  // and not one per turn.
  StatusOr<size_t> SharedSuffix(std::string_view text, size_t offset, const Encoding& whole,
                                bool add_special) const;

  // From tokenizer_config.json (empty when unknown); chat_template is the Jinja text.
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  const std::string& chat_template() const { return chat_template_; }
  std::optional<int64_t> eos_id() const { return eos_id_; }
  bool byte_level() const { return bpe_ == nullptr; }

 private:
  std::shared_ptr<const BpeTokenizer> bpe_;  // null: byte level
  std::string bos_token_, eos_token_, chat_template_;
  std::optional<int64_t> eos_id_;
};

}  // namespace qlorad::trainer
