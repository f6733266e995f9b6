// Hugging Face nests its components: a Sequence normalizer, pre-tokenizer or post-processor holds
// a list of parts. This walks such a list, naming each part's place for errors.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace qlorad::trainer {

// Calls `add(part, where_of_part)` for each element of `config[key]`, which must be an array;
// `where_of_part` reads like "tokenizer.json: normalizer.normalizers[2]".
template <typename Add>
Status ForEachSequencePart(const nlohmann::json& config, const std::string& key,
                           const std::string& where, Add add) {
  const std::string list_where = where + "." + key;
  const nlohmann::json& list = config.value(key, nlohmann::json());
  if (!list.is_array()) return InvalidArgument(list_where + ": expected an array");
  for (size_t i = 0; i < list.size(); ++i) {
    QLORAD_RETURN_IF_ERROR(add(list[i], list_where + "[" + std::to_string(i) + "]"));
  }
  return Status();
}

}  // namespace qlorad::trainer
