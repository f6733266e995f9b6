// qlorad-train's model subcommands, kept out of main.cc:
//   eval --model DIR [--adapter DIR] --data FILE [--device cpu|cuda] [--precision fp32|bf16]
//        [--json]
//     per-token losses of every example: {"per_token_loss": [[...], ...], "mean_loss": x}.
//   export --model DIR [--adapter DIR] --out DIR [--dtype bf16|fp16|fp32] [--max-shard-bytes N]
//     the adapter merged into its base as a plain Hugging Face checkpoint (see merged_export.h).
//   export --model DIR [--adapter DIR] --out DIR --format gguf [--type f16|q8_0]
//     the same merge as one GGUF file and an Ollama Modelfile (see gguf_export.h).
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "common/status.h"
#include "worker/trainer/train/eval.h"
#include "worker/trainer/train/gguf_export.h"
#include "worker/trainer/train/merged_export.h"

namespace qlorad::trainer {

struct ModelCli {
  CLI::App* eval = nullptr;
  EvalOptions eval_options;
  std::string eval_adapter;

  CLI::App* export_cmd = nullptr;
  ExportOptions export_options;
  std::string export_adapter;
  std::string export_format = "hf";  // hf | gguf
  std::string export_type;           // gguf only: f16 | q8_0

  bool json = false;
};

void AddModelSubcommands(CLI::App& app, ModelCli& cli);
// The chosen model subcommand's result; nullopt when it was another subcommand.
std::optional<Status> RunModelSubcommand(const ModelCli& cli);

}  // namespace qlorad::trainer
