#include "worker/trainer/tokenizer/bpe_tokenizer_normalizer.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include "worker/trainer/tokenizer/bpe_tokenizer_sequence.h"

namespace qlorad::trainer {

namespace {

// Unicode canonical composition (ICU). Text reaches here as UTF-8 read from JSON, so it is valid.
std::string Nfc(const std::string& text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) return text;  // ICU's data is built in; this does not happen
  const icu::UnicodeString in = icu::UnicodeString::fromUTF8(text);
  if (nfc->isNormalized(in, status) && U_SUCCESS(status)) return text;
  status = U_ZERO_ERROR;
  const icu::UnicodeString out = nfc->normalize(in, status);
  if (U_FAILURE(status)) return text;
  std::string utf8;
  out.toUTF8String(utf8);
  return utf8;
}

}  // namespace

StatusOr<Normalizer> Normalizer::FromJson(const nlohmann::json& config, const std::string& file) {
  Normalizer result;
  if (!config.is_null()) {
    QLORAD_RETURN_IF_ERROR(AddSteps(config, file + ": normalizer", result.steps_));
  }
  return result;
}

Status Normalizer::AddSteps(const nlohmann::json& config, const std::string& where,
                            std::vector<Step>& steps) {
  const std::string type = config.value("type", "");
  if (type == "Sequence") {
    return ForEachSequencePart(config, "normalizers", where,
                               [&](const nlohmann::json& part, const std::string& part_where) {
                                 return AddSteps(part, part_where, steps);
                               });
  }
  if (type == "Prepend") {
    steps.push_back({Step::Kind::kPrepend, "", config.value("prepend", "")});
    return Status();
  }
  if (type == "NFC") {
    steps.push_back({Step::Kind::kNfc, "", ""});
    return Status();
  }
  if (type == "Replace") {
    const nlohmann::json& pattern = config.value("pattern", nlohmann::json());
    if (!pattern.contains("String") || !pattern["String"].is_string() ||
        pattern["String"].get<std::string>().empty()) {
      return InvalidArgument(where + ": Replace is supported with a non-empty String pattern only");
    }
    steps.push_back({Step::Kind::kReplace, pattern["String"], config.value("content", "")});
    return Status();
  }
  return InvalidArgument(where + ": normalizer type " + type + " is not supported");
}

std::string Normalizer::Apply(std::string_view text) const {
  std::string out(text);
  for (const Step& step : steps_) {
    if (step.kind == Step::Kind::kNfc) {
      out = Nfc(out);
      continue;
    }
    if (step.kind == Step::Kind::kPrepend) {
      if (!out.empty()) out.insert(0, step.content);  // Hugging Face leaves empty text empty
      continue;
    }
    std::string replaced;
    size_t from = 0;
    for (size_t at; (at = out.find(step.pattern, from)) != std::string::npos;
         from = at + step.pattern.size()) {
      replaced.append(out, from, at - from).append(step.content);
    }
    replaced.append(out, from);
    out = std::move(replaced);
  }
  return out;
}

}  // namespace qlorad::trainer
