#include "worker/trainer/tokenizer/bpe_tokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace qlorad::trainer {

struct RegexSplitter::Code {
  pcre2_code* code = nullptr;
  std::string context;
  ~Code() { pcre2_code_free(code); }
};

namespace {

std::string PcreMessage(int error) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(error, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

struct MatchData {
  explicit MatchData(const pcre2_code* code)
      : data(pcre2_match_data_create_from_pattern(code, nullptr)) {}
  ~MatchData() { pcre2_match_data_free(data); }
  pcre2_match_data* data;
};

}  // namespace

StatusOr<RegexSplitter> RegexSplitter::Compile(const std::string& pattern,
                                               const std::string& context) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // UCP: \s, \w and friends follow Unicode like the Oniguruma patterns they were written for.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    return InvalidArgument(context + ": regex does not compile at offset " +
                           std::to_string(offset) + ": " + PcreMessage(error));
  }
  // JIT is only a speed-up: if the platform lacks it, the interpreter gives the same matches.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  auto owned = std::make_shared<Code>();
  owned->code = code;
  owned->context = context;
  return RegexSplitter(std::move(owned));
}

Status RegexSplitter::SplitIsolated(std::string_view text, std::vector<std::string>& out) const {
  MatchData match(code_->code);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;    // where the next search begins
  size_t emitted = 0;  // text before this is already in `out`
  uint32_t options = 0;
  while (start < text.size()) {
    const int rc =
        pcre2_match(code_->code, subject, text.size(), start, options, match.data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return InvalidArgument(code_->context + ": " +
                             (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21
                                  ? "input text is not valid UTF-8"
                                  : "regex match failed: " + PcreMessage(rc)));
    }
    // The whole subject was checked on the first call; skipping the check later saves O(n^2).
    options = PCRE2_NO_UTF_CHECK;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.data);
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end == begin) {
      // An empty match yields no piece; step over one whole UTF-8 character and search again.
      start = begin + 1;
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80)
        ++start;
      continue;
    }
    if (begin > emitted) out.emplace_back(text.substr(emitted, begin - emitted));
    out.emplace_back(text.substr(begin, end - begin));
    emitted = end;
    start = end;
  }
  if (emitted < text.size()) out.emplace_back(text.substr(emitted));
  return Status();
}

}  // namespace qlorad::trainer
