// The BPE model of a Hugging Face tokenizer.json: a vocabulary and ranked merges that turn one
// pre-tokenized piece into ids.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"

namespace qlorad::trainer {

class BpeModel {
 public:
  // `config` is tokenizer.json's "model"; `file` names tokenizer.json in errors.
  static StatusOr<BpeModel> FromJson(const nlohmann::json& config, const std::string& file);

  // Appends the ids of `piece` (one pre-token) to `ids`.
  void Encode(std::string_view piece, std::vector<int64_t>& ids) const;

  std::optional<int64_t> TokenToId(const std::string& token) const;

 private:
  struct Merge {
    int64_t rank;
    int64_t merged_id;
  };
  std::unordered_map<std::string, int64_t> vocab_;
  std::map<std::pair<int64_t, int64_t>, Merge> merges_;
  std::optional<int64_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  bool byte_fallback_ = false;
};

}  // namespace qlorad::trainer
