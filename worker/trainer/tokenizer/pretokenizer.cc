#include "worker/trainer/tokenizer/pretokenizer.h"

#include "worker/trainer/tokenizer/bpe_tokenizer_byte_level.h"
#include "worker/trainer/tokenizer/bpe_tokenizer_sequence.h"

namespace qlorad::trainer {
namespace {

// The GPT-2 pattern that ByteLevel applies when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A literal Split pattern matches itself: quote it for PCRE2.
std::string QuoteLiteral(const std::string& literal) {
  std::string quoted;
  for (char c : literal) {
    if (std::string_view(R"(\^$.|?*+()[]{}-/#)").find(c) != std::string_view::npos) quoted += '\\';
    quoted += c;
  }
  return quoted;
}

}  // namespace

StatusOr<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& config,
                                              const std::string& file) {
  PreTokenizer result;
  if (!config.is_null()) {
    QLORAD_RETURN_IF_ERROR(AddSteps(config, file + ": pre_tokenizer", result.steps_));
  }
  return result;
}

Status PreTokenizer::AddSteps(const nlohmann::json& config, const std::string& where,
                              std::vector<Step>& steps) {
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    return InvalidArgument(where + ": expected an object with a string \"type\"");
  }
  const std::string type = config["type"];
  if (type == "Sequence") {
    return ForEachSequencePart(config, "pretokenizers", where,
                               [&](const nlohmann::json& part, const std::string& part_where) {
                                 return AddSteps(part, part_where, steps);
                               });
  }
  if (type == "ByteLevel") {
    Step step;
    step.kind = Step::Kind::kByteLevel;
    step.add_prefix_space = config.value("add_prefix_space", false);
    if (config.value("use_regex", true)) {
      QLORAD_ASSIGN_OR_RETURN(auto splitter, RegexSplitter::Compile(kGpt2Pattern, where));
      step.splitter.push_back(std::move(splitter));
    }
    steps.push_back(std::move(step));
    return Status();
  }
  if (type == "Split") {
    const std::string behavior = config.value("behavior", "");
    if (behavior != "Isolated") {
      return InvalidArgument(where + ": Split behavior " + behavior + " is not supported");
    }
    if (config.value("invert", false)) {
      return InvalidArgument(where + ": Split with invert true is not supported");
    }
    const nlohmann::json& pattern = config.value("pattern", nlohmann::json());
    std::string regex;
    if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      regex = pattern["Regex"];
    } else if (pattern.contains("String") && pattern["String"].is_string()) {
      regex = QuoteLiteral(pattern["String"]);
    } else {
      return InvalidArgument(where + ".pattern: expected {\"Regex\": ...} or {\"String\": ...}");
    }
    QLORAD_ASSIGN_OR_RETURN(auto splitter, RegexSplitter::Compile(regex, where));
    Step step;
    step.kind = Step::Kind::kSplit;
    step.splitter.push_back(std::move(splitter));
    steps.push_back(std::move(step));
    return Status();
  }
  if (type == "Metaspace") return AddMetaspace(config, where, steps);
  return InvalidArgument(where + ": pre-tokenizer type " + type + " is not supported");
}

Status PreTokenizer::AddMetaspace(const nlohmann::json& config, const std::string& where,
                                  std::vector<Step>& steps) {
  Step step;
  step.kind = Step::Kind::kMetaspace;
  step.replacement = config.value("replacement", "\u2581");
  if (step.replacement.empty()) return InvalidArgument(where + ".replacement: is empty");
  // Older files say add_prefix_space (true meant "always") instead of prepend_scheme.
  step.prepend_scheme =
      config.value("prepend_scheme", config.value("add_prefix_space", true) ? "always" : "never");
  if (step.prepend_scheme != "always" && step.prepend_scheme != "first" &&
      step.prepend_scheme != "never") {
    return InvalidArgument(where + ".prepend_scheme " + step.prepend_scheme + " is not supported");
  }
  step.split = config.value("split", true);
  steps.push_back(std::move(step));
  return Status();
}

void PreTokenizer::ApplyMetaspace(const Step& step, std::string piece, bool at_text_start,
                                  std::vector<std::string>& out) {
  std::string text;
  for (char c : piece) {
    if (c == ' ') {
      text += step.replacement;
    } else {
      text += c;
    }
  }
  const bool prepend =
      step.prepend_scheme == "always" || (step.prepend_scheme == "first" && at_text_start);
  if (prepend && text.rfind(step.replacement, 0) != 0) text.insert(0, step.replacement);
  if (!step.split) {
    out.push_back(std::move(text));
    return;
  }
  // Each replacement starts a new piece and stays with what follows it.
  size_t begin = 0;
  for (size_t at = text.find(step.replacement, 1); at != std::string::npos;
       at = text.find(step.replacement, at + step.replacement.size())) {
    out.push_back(text.substr(begin, at - begin));
    begin = at;
  }
  out.push_back(text.substr(begin));
}

StatusOr<std::vector<std::string>> PreTokenizer::Split(std::string_view text,
                                                       bool at_text_start) const {
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.emplace_back(text);
  for (const Step& step : steps_) {
    std::vector<std::string> next;
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string& piece = pieces[i];
      if (step.kind == Step::Kind::kMetaspace) {
        // Only the piece that begins the input counts as first.
        ApplyMetaspace(step, std::move(piece), at_text_start && i == 0, next);
        continue;
      }
      // Like Hugging Face, ByteLevel's prefix space goes on every piece it is given.
      if (step.kind == Step::Kind::kByteLevel && step.add_prefix_space && piece[0] != ' ')
        piece.insert(piece.begin(), ' ');
      if (step.splitter.empty()) {
        next.push_back(std::move(piece));
      } else {
        QLORAD_RETURN_IF_ERROR(step.splitter[0].SplitIsolated(piece, next));
      }
    }
    if (step.kind == Step::Kind::kByteLevel) {
      for (std::string& piece : next) piece = ByteLevelEncode(piece);
    }
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace qlorad::trainer
