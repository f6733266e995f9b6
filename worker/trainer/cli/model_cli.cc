#include "worker/trainer/cli/model_cli.h"

#include <c10/util/Exception.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "common/jobspec.h"
#include "worker/trainer/cli/merge_report.h"
#include "worker/trainer/model/adapter.h"
#include "worker/trainer/runtime/event_sink.h"
#include "worker/trainer/weights/bnb4bit_reader.h"

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

Status RunClassify(const ModelCli& cli) {
  QLORAD_ASSIGN_OR_RETURN(const ClassifyResult r, Classify(cli.classify_options));
  if (cli.json) {
    std::cout << nlohmann::json{{"labels", r.labels},   {"logits", r.logits},
                                {"targets", r.targets}, {"predictions", r.predictions},
                                {"loss", r.loss},       {"accuracy", r.accuracy}}
                     .dump()
              << "\n";
  } else {
    std::cout << "loss " << r.loss << " accuracy " << r.accuracy << " over " << r.targets.size()
              << " examples\n";
  }
  return Status::Ok();
}

// The merge the options ask for, and the comparison's data (none: compare the weights only).
struct MergePlan {
  MergeBase base;
  std::optional<DataSpec> data;
};

StatusOr<MergePlan> PlanMerge(const ModelCli& cli) {
  MergePlan plan;
  plan.base.original_dir = NonEmpty(cli.original_dir);
  if (!cli.job_path.empty()) {
    QLORAD_ASSIGN_OR_RETURN(const JobSpec spec, LoadJobSpecFile(cli.job_path));
    plan.base.quantization = spec.quantization;
    plan.data = spec.data;
    // An adapter trained without quantization was trained against the 16-bit weights.
    if (spec.quantization.type == QuantizationType::kNone) plan.base.into = MergeInto::kOriginal;
  }
  if (!cli.merge_into.empty()) {
    QLORAD_ASSIGN_OR_RETURN(plan.base.into, ParseMergeInto(cli.merge_into, "--merge-into"));
  }
  if (!cli.compare_data.empty()) {
    plan.data = DataSpec{};
    plan.data->path = cli.compare_data;
  }
  return plan;
}

// After the export: how far the merge not written is from the one written, when the original
// weights are at hand (a 16-bit model directory, or --original).
Status CompareAfterExport(const ModelCli& cli, const MergePlan& plan, EventSink& events) {
  if (cli.no_compare) return Status::Ok();
  const std::string& model_dir = cli.export_options.model_dir;
  QLORAD_ASSIGN_OR_RETURN(const std::optional<BnbQuantization> bnb, ReadBnbQuantization(model_dir));
  const bool nf4_possible = bnb || plan.base.quantization.type == QuantizationType::kNf4;
  if (!nf4_possible) return Status::Ok();
  if (bnb && !plan.base.original_dir) {
    events.Log("info",
               "the original 16-bit weights are not at hand: pass --original DIR to "
               "compare merging into them with merging into the NF4 base");
    return Status::Ok();
  }
  CompareOptions options;
  options.model_dir = model_dir;
  options.adapter_dir = NonEmpty(cli.export_adapter);
  options.base = plan.base;
  options.data = plan.data;
  if (options.data && options.adapter_dir) {
    QLORAD_ASSIGN_OR_RETURN(const Task task, ReadAdapterTask(*options.adapter_dir));
    if (task == Task::kClassification) {
      events.Log("info",
                 "a classification adapter: the two merges are compared by their weights only "
                 "(the loss comparison is of next-token losses, which a classifier does not "
                 "compute)");
      options.data.reset();
    }
  }
  options.max_examples = cli.compare_examples;
  QLORAD_ASSIGN_OR_RETURN(const MergeComparison comparison, CompareMerges(options));
  ReportMergeComparison(comparison, plan.base.into, plan.data ? plan.data->path : "", cli.json,
                        events);
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
  QLORAD_ASSIGN_OR_RETURN(const MergePlan plan, PlanMerge(cli));
  options.merge = plan.base;
  QLORAD_ASSIGN_OR_RETURN(const GgufExportResult result, ExportGguf(options));
  EventSink events(cli.json, std::cout, std::cerr);
  for (const std::string& note : result.notes) events.Log("warning", note);
  events.Log("info", "exported " + std::to_string(result.tensors) + " tensors (" +
                         std::to_string(result.merged_layers) + " with LoRA merged, " +
                         options.type + ") to " + result.gguf_path + " (" +
                         std::to_string(result.bytes) + " bytes) and " + result.modelfile_path);
  return CompareAfterExport(cli, plan, events);
}

Status RunExport(const ModelCli& cli) {
  if (cli.export_format == "gguf") return RunGgufExport(cli);
  if (!cli.export_type.empty()) return InvalidArgument("--type: applies to --format gguf only");
  ExportOptions options = cli.export_options;
  options.adapter_dir = NonEmpty(cli.export_adapter);
  QLORAD_ASSIGN_OR_RETURN(const MergePlan plan, PlanMerge(cli));
  options.merge = plan.base;
  QLORAD_ASSIGN_OR_RETURN(const ExportResult result, ExportMerged(options));
  EventSink events(cli.json, std::cout, std::cerr);
  for (const std::string& note : result.notes) events.Log("warning", note);
  events.Log("info", "exported " + std::to_string(result.tensors) + " tensors (" +
                         std::to_string(result.merged_layers) + " with LoRA merged) in " +
                         std::to_string(result.shards) + " shard(s) to " + options.out_dir +
                         " (merged into the " +
                         (plan.base.into == MergeInto::kNf4 ? "dequantized NF4" : "original") +
                         " weights" +
                         (result.num_labels > 0
                              ? "; a sequence-classification model with " +
                                    std::to_string(result.num_labels) + " labels and its score head"
                              : std::string()) +
                         ")");
  return CompareAfterExport(cli, plan, events);
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

  cli.classify = app.add_subcommand(
      "classify", "logits, loss and accuracy of a classification adapter on labelled examples");
  cli.classify->add_option("--model", cli.classify_options.model_dir, "base model directory")
      ->required();
  cli.classify
      ->add_option("--adapter", cli.classify_options.adapter_dir,
                   "PEFT SEQ_CLS LoRA adapter (score head in modules_to_save)")
      ->required();
  cli.classify->add_option("--data", cli.classify_options.data_path, "JSONL of labelled examples")
      ->required();
  cli.classify->add_option("--label-field", cli.classify_options.label_field,
                           "the records' label field (default: the adapter's labels.json)");
  cli.classify->add_flag("--json", cli.json,
                         "print {labels, logits, targets, predictions, loss, accuracy}");

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
  cli.export_cmd
      ->add_option("--merge-into", cli.merge_into,
                   "nf4: the dequantized NF4 base the adapter was trained against (default) | "
                   "original: the 16-bit weights (--original, or the model directory's own)")
      ->check(CLI::IsMember({"nf4", "original"}));
  cli.export_cmd->add_option("--original", cli.original_dir,
                             "the original 16-bit model directory (for a bitsandbytes --model)");
  cli.export_cmd->add_option("--job", cli.job_path,
                             "the job spec the adapter came from: its quantization (how a 16-bit "
                             "base is quantized for nf4) and data (for the comparison's losses)");
  cli.export_cmd->add_option(
      "--compare-data", cli.compare_data,
      "dataset for the comparison's per-token losses (instead of the job's)");
  cli.export_cmd
      ->add_option("--compare-examples", cli.compare_examples,
                   "examples of the data the comparison's losses run on (default 8)")
      ->check(CLI::NonNegativeNumber);
  cli.export_cmd->add_flag("--no-compare", cli.no_compare,
                           "skip comparing the nf4 and original merges");
  cli.export_cmd->add_flag("--json", cli.json, "one JSON event per line on stdout");
}

std::optional<Status> RunModelSubcommand(const ModelCli& cli) {
  const bool eval = cli.eval->parsed();
  const bool classify = cli.classify->parsed();
  if (!eval && !classify && !cli.export_cmd->parsed()) return std::nullopt;
  try {
    if (classify) return RunClassify(cli);
    return eval ? RunEval(cli) : RunExport(cli);
  } catch (const c10::Error& e) {
    // Torch reports shape and device faults by throwing; they still become an error event.
    return Internal(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Internal(e.what());
  }
}

}  // namespace qlorad::trainer
