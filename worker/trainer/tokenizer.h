// The byte-level tokenizer: UTF-8 bytes are ids 0-255, then three specials. Enough for demos and
// tests with the tiny model; real models bring their own tokenizer (a later piece).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qlorad::trainer {

inline constexpr int64_t kBosId = 256;
inline constexpr int64_t kEosId = 257;
inline constexpr int64_t kPadId = 258;
// 256 bytes + specials, rounded up to a multiple of 64 for friendlier matmul shapes.
inline constexpr int64_t kByteVocabSize = 320;

// BOS, the bytes of `text`, EOS.
std::vector<int64_t> ByteTokenize(const std::string& text);

}  // namespace qlorad::trainer
