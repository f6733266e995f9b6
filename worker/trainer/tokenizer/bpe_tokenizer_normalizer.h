// The normalizer of a Hugging Face tokenizer.json, run on each stretch of text between added
// tokens. Supported: null, Prepend and Replace (with a literal pattern), NFC, and a Sequence of
// those: what Llama 2 and Mistral files use to turn spaces into "▁", and Qwen2's NFC. Others are an
// error naming them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

class Normalizer {
 public:
  // `config` is tokenizer.json's "normalizer"; `file` names it in errors.
  static StatusOr<Normalizer> FromJson(const nlohmann::json& config, const std::string& file);

  std::string Apply(std::string_view text) const;

 private:
  struct Step {
    enum class Kind { kPrepend, kReplace, kNfc } kind;
    std::string pattern;  // kReplace: what is replaced
    std::string content;  // what is prepended, or the replacement
  };
  static Status AddSteps(const nlohmann::json& config, const std::string& where,
                         std::vector<Step>& steps);
  std::vector<Step> steps_;
};

}  // namespace qlorad::trainer
