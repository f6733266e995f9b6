// The ByteLevel alphabet of GPT-2-style tokenizers (Llama 3, Qwen2): every byte maps to one
// printable code point, so a vocabulary of strings can cover arbitrary bytes.
#pragma once

#include <string>
#include <string_view>

namespace qlorad::trainer {

// Appends the UTF-8 encoding of `code_point` to `out`.
void AppendUtf8(std::string& out, char32_t code_point);

// The code point that byte `b` stands for: printable Latin-1 bytes stand for themselves, the other
// 68 bytes for U+0100 onwards in byte order.
char32_t ByteLevelCodePoint(unsigned char b);

// `bytes` with every byte replaced by its code point, as UTF-8.
std::string ByteLevelEncode(std::string_view bytes);

}  // namespace qlorad::trainer
