#include "worker/trainer/tokenizer/bpe_tokenizer_post.h"

#include "worker/trainer/tokenizer/bpe_tokenizer_sequence.h"

namespace qlorad::trainer {
namespace {

Status AddTemplate(const nlohmann::json& config, const std::string& where,
                   SpecialAffixes& affixes) {
  const nlohmann::json& single = config.value("single", nlohmann::json());
  if (!single.is_array()) return InvalidArgument(where + ".single: expected an array");
  const nlohmann::json& specials = config.value("special_tokens", nlohmann::json::object());
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string item_where = where + ".single[" + std::to_string(i) + "]";
    const nlohmann::json& item = single[i];
    if (item.contains("Sequence")) {
      if (item["Sequence"].value("id", "") != "A") {
        return InvalidArgument(item_where + ": a single-sequence template can only use A");
      }
      seen_sequence = true;
      continue;
    }
    if (!item.contains("SpecialToken")) {
      return InvalidArgument(item_where + ": expected Sequence or SpecialToken");
    }
    const std::string name = item["SpecialToken"].value("id", "");
    if (!specials.contains(name) || !specials[name].contains("ids") ||
        !specials[name]["ids"].is_array()) {
      return InvalidArgument(item_where + ": special token " + name +
                             " has no ids in special_tokens");
    }
    auto& target = seen_sequence ? affixes.suffix : affixes.prefix;
    for (const auto& id : specials[name]["ids"]) target.push_back(id.get<int64_t>());
  }
  return Status();
}

Status AddPostProcessor(const nlohmann::json& config, const std::string& where,
                        SpecialAffixes& affixes) {
  if (config.is_null()) return Status();
  const std::string type = config.value("type", "");
  if (type == "ByteLevel") return Status();  // it only trims offsets
  if (type == "TemplateProcessing") return AddTemplate(config, where, affixes);
  if (type == "Sequence") {
    return ForEachSequencePart(config, "processors", where,
                               [&](const nlohmann::json& part, const std::string& part_where) {
                                 return AddPostProcessor(part, part_where, affixes);
                               });
  }
  return InvalidArgument(where + ": post-processor type " + type + " is not supported");
}

}  // namespace

StatusOr<SpecialAffixes> ParsePostProcessor(const nlohmann::json& config, const std::string& file) {
  SpecialAffixes affixes;
  QLORAD_RETURN_IF_ERROR(AddPostProcessor(config, file + ": post_processor", affixes));
  return affixes;
}

}  // namespace qlorad::trainer
