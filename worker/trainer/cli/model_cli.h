// qlorad-train's model subcommands, kept out of main.cc:
//   eval --model DIR [--adapter DIR] --data FILE [--device cpu|cuda] [--precision fp32|bf16]
//        [--json]
//     per-token losses of every example: {"per_token_loss": [[...], ...], "mean_loss": x}.
//   classify --model DIR --adapter DIR --data FILE [--label-field F] [--json]
//     a classification adapter's logits, loss and accuracy per example (see classify.h).
//   export --model DIR [--adapter DIR] --out DIR [--dtype bf16|fp16|fp32] [--max-shard-bytes N]
//     the adapter merged into its base as a plain Hugging Face checkpoint (see merged_export.h).
//   export --model DIR [--adapter DIR] --out DIR --format gguf [--type f16|q8_0]
//     the same merge as one GGUF file and an Ollama Modelfile (see gguf_export.h).
//   either export: [--merge-into nf4|original] [--original DIR] [--job JOB.yaml]
//     [--compare-data FILE] [--compare-examples N] [--no-compare]
//     the base merged into, and how far the other merge is from it (merge_comparison.h).
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "common/status.h"
#include "worker/trainer/train/classify.h"
#include "worker/trainer/train/eval.h"
#include "worker/trainer/train/gguf_export.h"
#include "worker/trainer/train/merged_export.h"

namespace qlorad::trainer {

struct ModelCli {
  CLI::App* eval = nullptr;
  EvalOptions eval_options;
  std::string eval_adapter;

  CLI::App* classify = nullptr;
  ClassifyOptions classify_options;

  CLI::App* export_cmd = nullptr;
  ExportOptions export_options;
  std::string export_adapter;
  std::string export_format = "hf";  // hf | gguf
  std::string export_type;           // gguf only: f16 | q8_0
  // Which base the adapter merges into, and the comparison of both merges (train/merge_base.h).
  std::string merge_into;  // nf4 | original; empty: nf4, or original for a --job without NF4
  std::string original_dir;
  std::string job_path;      // its quantization section, and data for the comparison
  std::string compare_data;  // a dataset for the comparison's losses (instead of the job's)
  int64_t compare_examples = 8;
  bool no_compare = false;

  bool json = false;
};

void AddModelSubcommands(CLI::App& app, ModelCli& cli);
// The chosen model subcommand's result; nullopt when it was another subcommand.
std::optional<Status> RunModelSubcommand(const ModelCli& cli);

}  // namespace qlorad::trainer
