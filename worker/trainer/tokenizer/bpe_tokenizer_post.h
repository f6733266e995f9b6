// The post-processor of a Hugging Face tokenizer.json, for single sequences: which special ids
// go before and after the text (Llama 3's TemplateProcessing adds BOS). Supported: null,
// ByteLevel (adds nothing to ids), TemplateProcessing, and a Sequence of those.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

struct SpecialAffixes {
  std::vector<int64_t> prefix;
  std::vector<int64_t> suffix;
};

// `config` is tokenizer.json's "post_processor"; `file` names it in errors.
StatusOr<SpecialAffixes> ParsePostProcessor(const nlohmann::json& config, const std::string& file);

}  // namespace qlorad::trainer
