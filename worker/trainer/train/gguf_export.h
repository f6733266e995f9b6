// `qlorad-train export --format gguf --type f16|q8_0`: a base model with its LoRA adapter merged in
// (the same weights `export` writes as safetensors, merged_tensors.h) written as one GGUF v3 file
// llama.cpp and Ollama load, with an Ollama Modelfile beside it:
//   <out>/model-<type>.gguf   weights in llama.cpp's names and rotary layout, architecture and
//                             tokenizer metadata, the chat template (gguf_llama.h, gguf_vocab.h)
//   <out>/Modelfile           FROM ./model-<type>.gguf, stop tokens (ollama_modelfile.h)
// Llama 2/3/3.x, Mistral and Qwen2 checkpoints with a byte-level BPE tokenizer.json.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/trainer/train/merge_base.h"

namespace qlorad::trainer {

struct GgufExportOptions {
  std::string model_dir;
  std::optional<std::string> adapter_dir;
  std::string out_dir;       // new or empty, as for the safetensors export
  std::string type = "f16";  // f16 | q8_0: the 2-D weights' type (1-D tensors stay f32)
  MergeBase merge;           // as for the safetensors export
};

struct GgufExportResult {
  std::string gguf_path;
  std::string modelfile_path;
  int64_t tensors = 0;
  int64_t merged_layers = 0;
  int64_t bytes = 0;               // the .gguf file's size
  std::vector<std::string> notes;  // what the file leaves out, for the log
};

StatusOr<GgufExportResult> ExportGguf(const GgufExportOptions& options);

}  // namespace qlorad::trainer
