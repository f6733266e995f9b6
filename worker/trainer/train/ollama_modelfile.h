// The Ollama Modelfile written beside an exported GGUF, so `ollama create NAME -f Modelfile` in
// that directory imports it. It writes no TEMPLATE: the chat template travels in the GGUF
// (tokenizer.chat_template), and Ollama derives its prompt template from that when it recognizes
// it; a Go-template translation of an arbitrary Jinja template could not be checked honestly. The
// stop parameters are the EOS token and the end-of-turn markers the chat template uses.
#pragma once

#include <string>

#include "worker/trainer/tokenizer/gguf_vocab.h"

namespace qlorad::trainer {

std::string OllamaModelfile(const std::string& gguf_file_name, const GgufVocab& vocab);

}  // namespace qlorad::trainer
