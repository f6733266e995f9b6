#include "worker/trainer/tokenizer.h"

namespace qlorad::trainer {

std::vector<int64_t> ByteTokenize(const std::string& text) {
  std::vector<int64_t> ids;
  ids.reserve(text.size() + 2);
  ids.push_back(kBosId);
  for (unsigned char c : text) ids.push_back(c);
  ids.push_back(kEosId);
  return ids;
}

}  // namespace qlorad::trainer
