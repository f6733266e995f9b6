#include "worker/trainer/train/ollama_modelfile.h"

#include <algorithm>
#include <vector>

namespace qlorad::trainer {

namespace {

// End-of-turn and end-of-text markers of the Llama 3 and ChatML (Qwen2) formats and of
// SentencePiece models: a stop when the chat template writes it.
constexpr const char* kTurnMarkers[] = {"<|eot_id|>", "<|eom_id|>",    "<|end_of_text|>",
                                        "<|im_end|>", "<|endoftext|>", "</s>"};

// A Modelfile string argument: quoted, with quotes and backslashes escaped.
std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string OllamaModelfile(const std::string& gguf_file_name, const GgufVocab& vocab) {
  std::vector<std::string> stops;
  const auto add = [&](const std::string& s) {
    if (!s.empty() && std::find(stops.begin(), stops.end(), s) == stops.end()) stops.push_back(s);
  };
  if (vocab.eos_id && *vocab.eos_id < vocab.tokens.size()) add(vocab.tokens[*vocab.eos_id]);
  if (vocab.chat_template) {
    for (const char* marker : kTurnMarkers) {
      if (vocab.chat_template->find(marker) != std::string::npos) add(marker);
    }
  }
  std::string out =
      "# Ollama Modelfile written by `qlorad-train export --format gguf`. In this directory:\n"
      "#   ollama create NAME -f Modelfile\n"
      "FROM ./" +
      gguf_file_name + "\n";
  if (vocab.chat_template) {
    out +=
        "# No TEMPLATE: the model's chat template is in the GGUF (tokenizer.chat_template) and\n"
        "# Ollama derives its prompt template from it when it recognizes it. If `ollama show\n"
        "# --modelfile NAME` shows a bare {{ .Prompt }} template, add a TEMPLATE here.\n";
  } else {
    out += "# No TEMPLATE: the model has no chat template, so prompts are sent as they are.\n";
  }
  for (const std::string& stop : stops) out += "PARAMETER stop " + Quoted(stop) + "\n";
  return out;
}

}  // namespace qlorad::trainer
