#include "worker/trainer/tokenizer/bpe_tokenizer_model.h"

#include <cstdio>
#include <limits>

namespace qlorad::trainer {
namespace {

// Length of the UTF-8 character starting with `lead`; invalid bytes count as one.
size_t Utf8Length(unsigned char lead) {
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;
}

// One merge in either form: ["a", "b"] (newer files) or "a b" (older files).
StatusOr<std::pair<std::string, std::string>> ParseMerge(const nlohmann::json& merge,
                                                         const std::string& where) {
  if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
    return std::make_pair(merge[0].get<std::string>(), merge[1].get<std::string>());
  }
  if (merge.is_string()) {
    const std::string text = merge;
    const size_t space = text.find(' ');
    if (space != std::string::npos && space > 0 && space + 1 < text.size() &&
        text.find(' ', space + 1) == std::string::npos) {
      return std::make_pair(text.substr(0, space), text.substr(space + 1));
    }
  }
  return InvalidArgument(where + ": expected [\"a\", \"b\"] or \"a b\", got " + merge.dump());
}

}  // namespace

StatusOr<BpeModel> BpeModel::FromJson(const nlohmann::json& config, const std::string& file) {
  const std::string where = file + ": model";
  if (!config.is_object()) return InvalidArgument(where + ": expected an object");
  const std::string type = config.value("type", "BPE");
  if (type != "BPE") return InvalidArgument(where + ".type " + type + " is not supported");
  // Dropout would make encoding random; the affixes belong to WordPiece-style vocabularies.
  if (config.contains("dropout") && !config["dropout"].is_null() &&
      config["dropout"].get<double>() != 0.0) {
    return InvalidArgument(where + ".dropout is not supported (encoding must be deterministic)");
  }
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (config.contains(affix) && config[affix].is_string() &&
        !config[affix].get<std::string>().empty()) {
      return InvalidArgument(where + "." + affix + " is not supported");
    }
  }
  BpeModel model;
  const nlohmann::json& vocab = config.value("vocab", nlohmann::json());
  if (!vocab.is_object()) return InvalidArgument(where + ".vocab: expected an object");
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return InvalidArgument(where + ".vocab[\"" + token + "\"]: expected a non-negative id");
    }
    model.vocab_.emplace(token, id.get<int64_t>());
  }
  const nlohmann::json& merges = config.value("merges", nlohmann::json::array());
  if (!merges.is_array()) return InvalidArgument(where + ".merges: expected an array");
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string merge_where = where + ".merges[" + std::to_string(rank) + "]";
    QLORAD_ASSIGN_OR_RETURN(auto pair, ParseMerge(merges[rank], merge_where));
    auto left = model.vocab_.find(pair.first);
    auto right = model.vocab_.find(pair.second);
    auto merged = model.vocab_.find(pair.first + pair.second);
    if (left == model.vocab_.end() || right == model.vocab_.end() || merged == model.vocab_.end()) {
      return InvalidArgument(merge_where + ": a token of " + merges[rank].dump() +
                             " or their concatenation is not in the vocab");
    }
    // A repeated pair keeps its first (best) rank.
    model.merges_.emplace(std::make_pair(left->second, right->second),
                          Merge{static_cast<int64_t>(rank), merged->second});
  }
  if (config.contains("unk_token") && config["unk_token"].is_string()) {
    const std::string unk = config["unk_token"];
    auto it = model.vocab_.find(unk);
    if (it == model.vocab_.end()) {
      return InvalidArgument(where + ".unk_token " + unk + " is not in the vocab");
    }
    model.unk_id_ = it->second;
  }
  model.fuse_unk_ = config.value("fuse_unk", false);
  model.ignore_merges_ = config.value("ignore_merges", false);
  model.byte_fallback_ = config.value("byte_fallback", false);
  return model;
}

std::optional<int64_t> BpeModel::TokenToId(const std::string& token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::Encode(std::string_view piece, std::vector<int64_t>& ids) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(std::string(piece)); it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  // Start from single characters; a character outside the vocab becomes its bytes' <0xXX>
  // tokens (byte_fallback), or unk (fused when asked), or is dropped, as Hugging Face does.
  std::vector<int64_t> symbols;
  bool last_was_unk = false;
  for (size_t i = 0; i < piece.size();) {
    const size_t len = std::min(Utf8Length(static_cast<unsigned char>(piece[i])), piece.size() - i);
    const std::string character(piece.substr(i, len));
    i += len;
    if (auto it = vocab_.find(character); it != vocab_.end()) {
      symbols.push_back(it->second);
      last_was_unk = false;
      continue;
    }
    if (byte_fallback_) {
      std::vector<int64_t> bytes;
      for (unsigned char b : character) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        auto byte_it = vocab_.find(name);
        if (byte_it == vocab_.end()) break;
        bytes.push_back(byte_it->second);
      }
      if (bytes.size() == character.size()) {
        symbols.insert(symbols.end(), bytes.begin(), bytes.end());
        last_was_unk = false;
        continue;
      }
    }
    if (unk_id_ && !(fuse_unk_ && last_was_unk)) symbols.push_back(*unk_id_);
    last_was_unk = unk_id_.has_value();
  }
  // Merge the best-ranked adjacent pair (the leftmost on a tie) until none is left; pieces are
  // short, so the quadratic scan costs less than a priority queue would.
  while (symbols.size() > 1) {
    int64_t best_rank = std::numeric_limits<int64_t>::max();
    size_t best_at = 0;
    int64_t best_id = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merges_.find({symbols[i], symbols[i + 1]});
      if (it != merges_.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        best_at = i;
        best_id = it->second.merged_id;
      }
    }
    if (best_rank == std::numeric_limits<int64_t>::max()) break;
    symbols[best_at] = best_id;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
  ids.insert(ids.end(), symbols.begin(), symbols.end());
}

}  // namespace qlorad::trainer
