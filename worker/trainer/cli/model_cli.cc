#include "worker/trainer/cli/model_cli.h"

#include <c10/util/Exception.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "worker/trainer/runtime/event_sink.h"

namespace qlorad::trainer {

namespace {

std::optional<std::string> NonEmpty(const std::string& s) {
  return s.empty() ? std::nullopt : std::optional<std::string>(s);
}

Status RunEval(const ModelCli& cli) {
  EvalOptions options = cli.eval_options;
  options.adapter_dir = NonEmpty(cli.eval_adapter);
  QLORAD_ASSIGN_OR_RETURN(const EvalResult result, Evaluate(options));
  if (cli.json) {
    std::cout << nlohmann::json{{"per_token_loss", result.per_token_loss},
                                {"mean_loss", result.mean_loss}}
                     .dump()
              << "\n";
  } else {
    std::cout << "mean_loss " << result.mean_loss << " over " << result.per_token_loss.size()
              << " examples\n";
  }
  return Status::Ok();
}

Status RunGgufExport(const ModelCli& cli) {
  if (cli.export_cmd->count("--dtype") > 0 || cli.export_cmd->count("--max-shard-bytes") > 0) {
    return InvalidArgument(
        std::string(cli.export_cmd->count("--dtype") > 0 ? "--dtype" : "--max-shard-bytes") +
        ": applies to --format hf; a GGUF takes --type f16|q8_0");
  }
  GgufExportOptions options;
  options.model_dir = cli.export_options.model_dir;
  options.adapter_dir = NonEmpty(cli.export_adapter);
  options.out_dir = cli.export_options.out_dir;
  if (!cli.export_type.empty()) options.type = cli.export_type;
  QLORAD_ASSIGN_OR_RETURN(const GgufExportResult result, ExportGguf(options));
  EventSink events(cli.json, std::cout, std::cerr);
  for (const std::string& note : result.notes) events.Log("warning", note);
  events.Log("info", "exported " + std::to_string(result.tensors) + " tensors (" +
                         std::to_string(result.merged_layers) + " with LoRA merged, " +
                         options.type + ") to " + result.gguf_path + " (" +
                         std::to_string(result.bytes) + " bytes) and " + result.modelfile_path);
  return Status::Ok();
}

Status RunExport(const ModelCli& cli) {
  if (cli.export_format == "gguf") return RunGgufExport(cli);
  if (!cli.export_type.empty()) return InvalidArgument("--type: applies to --format gguf only");
  ExportOptions options = cli.export_options;
  options.adapter_dir = NonEmpty(cli.export_adapter);
  QLORAD_ASSIGN_OR_RETURN(const ExportResult result, ExportMerged(options));
  EventSink events(cli.json, std::cout, std::cerr);
  events.Log("info", "exported " + std::to_string(result.tensors) + " tensors (" +
                         std::to_string(result.merged_layers) + " with LoRA merged) in " +
                         std::to_string(result.shards) + " shard(s) to " + options.out_dir);
  return Status::Ok();
}

}  // namespace

void AddModelSubcommands(CLI::App& app, ModelCli& cli) {
  cli.eval = app.add_subcommand(
      "eval", "per-token loss of a model (and optional PEFT adapter) on a JSONL dataset");
  cli.eval->add_option("--model", cli.eval_options.model_dir, "Hugging Face model directory")
      ->required();
  cli.eval->add_option("--adapter", cli.eval_adapter, "PEFT LoRA adapter directory");
  cli.eval->add_option("--data", cli.eval_options.data_path, "JSONL dataset")->required();
  cli.eval->add_option("--device", cli.eval_options.device, "cpu | cuda (default cpu)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cli.eval
      ->add_option("--precision,--dtype", cli.eval_options.precision,
                   "fp32 | bf16 | fp16: weights and activations (default fp32)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cli.eval->add_flag("--json", cli.json,
                     "print {\"per_token_loss\": [[...], ...], \"mean_loss\": x} on stdout");

  cli.export_cmd = app.add_subcommand(
      "export", "merge a LoRA adapter into its base and write a Hugging Face checkpoint or a GGUF");
  cli.export_cmd->add_option("--model", cli.export_options.model_dir, "base model directory")
      ->required();
  cli.export_cmd->add_option("--adapter", cli.export_adapter, "PEFT LoRA adapter to merge");
  cli.export_cmd->add_option("--out", cli.export_options.out_dir, "output directory (new or empty)")
      ->required();
  cli.export_cmd
      ->add_option("--dtype", cli.export_options.dtype,
                   "bf16 | fp16 | fp32 (default: the base checkpoint's dtype)")
      ->check(CLI::IsMember({"bf16", "fp16", "fp32"}));
  cli.export_cmd
      ->add_option("--max-shard-bytes", cli.export_options.max_shard_bytes,
                   "largest safetensors shard (default 5e9)")
      ->check(CLI::PositiveNumber);
  cli.export_cmd
      ->add_option("--format", cli.export_format,
                   "hf (safetensors + config, default) | gguf (llama.cpp / Ollama)")
      ->check(CLI::IsMember({"hf", "gguf"}));
  cli.export_cmd
      ->add_option("--type", cli.export_type,
                   "gguf: f16 | q8_0, the 2-D weights' type (default f16; norms stay f32)")
      ->check(CLI::IsMember({"f16", "q8_0"}));
  cli.export_cmd->add_flag("--json", cli.json, "one JSON event per line on stdout");
}

std::optional<Status> RunModelSubcommand(const ModelCli& cli) {
  const bool eval = cli.eval->parsed();
  if (!eval && !cli.export_cmd->parsed()) return std::nullopt;
  try {
    return eval ? RunEval(cli) : RunExport(cli);
  } catch (const c10::Error& e) {
    // Torch reports shape and device faults by throwing; they still become an error event.
    return Internal(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Internal(e.what());
  }
}

}  // namespace qlorad::trainer
