#include "worker/trainer/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <iterator>

#include "worker/trainer/io/file_util.h"

namespace qlorad::trainer {

StatusOr<BpeTokenizer> BpeTokenizer::Load(const std::string& path) {
  QLORAD_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return InvalidArgument(path + ": not valid JSON");
  return FromJson(config, path);
}

StatusOr<BpeTokenizer> BpeTokenizer::FromJson(const nlohmann::json& config,
                                              const std::string& file) {
  if (!config.is_object()) return InvalidArgument(file + ": expected a JSON object");
  // Wrongly typed fields deep inside make nlohmann throw; they are bad input, not a crash.
  try {
    QLORAD_ASSIGN_OR_RETURN(
        auto normalizer, Normalizer::FromJson(config.value("normalizer", nlohmann::json()), file));
    QLORAD_ASSIGN_OR_RETURN(
        auto added, AddedTokens::FromJson(config.value("added_tokens", nlohmann::json()), file));
    QLORAD_ASSIGN_OR_RETURN(
        auto pre, PreTokenizer::FromJson(config.value("pre_tokenizer", nlohmann::json()), file));
    if (!config.contains("model")) return InvalidArgument(file + ": model is missing");
    QLORAD_ASSIGN_OR_RETURN(auto model, BpeModel::FromJson(config["model"], file));
    QLORAD_ASSIGN_OR_RETURN(
        auto affixes, ParsePostProcessor(config.value("post_processor", nlohmann::json()), file));
    return BpeTokenizer(std::move(added), std::move(normalizer), std::move(pre), std::move(model),
                        std::move(affixes));
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(file + ": unexpected JSON layout: " + e.what());
  }
}

StatusOr<std::vector<int64_t>> BpeTokenizer::Encode(std::string_view text, bool add_affixes,
                                                    bool match_special,
                                                    std::vector<AddedTokenMatch>* matches) const {
  std::vector<int64_t> ids;
  if (add_affixes) ids = affixes_.prefix;
  for (const AddedTokens::Segment& segment :
       added_.Split(text, /*normalized=*/false, match_special)) {
    if (segment.id >= 0) {
      if (matches != nullptr) {
        const size_t begin = static_cast<size_t>(segment.text.data() - text.data());
        matches->push_back({begin, begin + segment.text.size(), ids.size()});
      }
      ids.push_back(segment.id);
      continue;
    }
    const bool at_text_start = segment.text.data() == text.data();
    QLORAD_RETURN_IF_ERROR(EncodePlain(segment.text, match_special, at_text_start, ids));
  }
  if (add_affixes) ids.insert(ids.end(), affixes_.suffix.begin(), affixes_.suffix.end());
  return ids;
}

StatusOr<BpeTokenizer::SuffixIds> BpeTokenizer::EncodeSuffix(
    std::string_view text, size_t offset, const std::vector<int64_t>& whole,
    const std::vector<AddedTokenMatch>& matches, bool add_affixes, bool match_special) const {
  // The first added token at or after `offset` (matches are in text order).
  const auto next = std::partition_point(
      matches.begin(), matches.end(), [&](const AddedTokenMatch& m) { return m.begin < offset; });
  SuffixIds out;
  if (next != matches.begin() && std::prev(next)->end > offset) {
    QLORAD_ASSIGN_OR_RETURN(out.head, Encode(text.substr(offset), add_affixes, match_special));
    out.joins_at = whole.size();
    return out;
  }
  // From `offset` the suffix's scan for added tokens walks the same positions as the whole
  // text's did, so it matches `next` first (with the same lstrip reach, which stops at `offset`
  // at the latest) and everything after it as the whole text did.
  if (add_affixes) out.head = affixes_.prefix;
  const size_t stop = next == matches.end() ? text.size() : next->begin;
  if (stop > offset) {
    QLORAD_RETURN_IF_ERROR(EncodePlain(text.substr(offset, stop - offset), match_special,
                                       /*at_text_start=*/true, out.head));
  }
  out.joins_at = next != matches.end() ? next->index
                 : add_affixes         ? whole.size() - affixes_.suffix.size()
                                       : whole.size();
  return out;
}

Status BpeTokenizer::EncodePlain(std::string_view text, bool match_special, bool at_text_start,
                                 std::vector<int64_t>& ids) const {
  const std::string normalized = normalizer_.Apply(text);
  for (const AddedTokens::Segment& segment :
       added_.Split(normalized, /*normalized=*/true, match_special)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    const bool first = at_text_start && segment.text.data() == normalized.data();
    QLORAD_ASSIGN_OR_RETURN(auto pieces, pre_.Split(segment.text, first));
    for (const std::string& piece : pieces) model_.Encode(piece, ids);
  }
  return Status();
}

}  // namespace qlorad::trainer
