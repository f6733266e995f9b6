#include "worker/trainer/train/merged_export.h"

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "worker/trainer/io/file_util.h"
#include "worker/trainer/io/json_file.h"
#include "worker/trainer/model/adapter.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/runtime/dtype_names.h"
#include "worker/trainer/train/classification_export.h"
#include "worker/trainer/train/classification_head.h"
#include "worker/trainer/train/merged_tensors.h"
#include "worker/trainer/weights/safetensors_torch.h"

namespace qlorad::trainer {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Files of a model directory that describe how to use it rather than its weights.
constexpr const char* kCopiedFiles[] = {"tokenizer.json",      "tokenizer_config.json",
                                        "tokenizer.model",     "special_tokens_map.json",
                                        "added_tokens.json",   "vocab.json",
                                        "merges.txt",          "generation_config.json",
                                        "chat_template.jinja", "chat_template.json"};

struct OutputTensor {
  std::string name;
  int64_t bytes = 0;
  std::function<at::Tensor()>
      make;  // the tensor in the output dtype, made when its shard is written
};

// `name` (--dtype) when given, else the dtype of `base`, read from `config_path`.
StatusOr<at::ScalarType> OutputDtype(const std::string& name, const LlamaConfig& base,
                                     const std::string& config_path) {
  if (!name.empty()) return ParsePrecision(name, "--dtype");
  if (std::optional<at::ScalarType> type = DtypeFromTorchName(base.torch_dtype)) return *type;
  return InvalidArgument(config_path + ": dtype: '" + base.torch_dtype +
                         "' is not bfloat16, float16 or float32; pass --dtype");
}

// The merged tensors; with a classification `score` head ([labels, hidden]), the head in
// lm_head's place (a sequence-classification model has no lm_head).
std::vector<OutputTensor> PlanTensors(const LlamaModel& model, at::ScalarType dtype,
                                      const std::optional<at::Tensor>& score,
                                      int64_t* merged_layers) {
  std::vector<MergedTensor> merged = MergedTensors(model, merged_layers);
  if (score) {
    std::erase_if(merged, [](const MergedTensor& t) { return t.name == "lm_head.weight"; });
    merged.push_back({"score.weight", score->sizes().vec(), [w = *score] { return w; }});
  }
  std::vector<OutputTensor> out;
  const int64_t element = static_cast<int64_t>(c10::elementSize(dtype));
  for (MergedTensor& t : merged) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    out.push_back({t.name, numel * element,
                   [make = std::move(t.make), dtype] { return make().to(dtype).contiguous(); }});
  }
  return out;
}

// A classification adapter's head, checked against the base (none for a causal adapter).
StatusOr<std::optional<AdapterHead>> ClassificationHeadOf(
    const std::optional<std::string>& adapter_dir, const LlamaConfig& base) {
  if (!adapter_dir) return std::optional<AdapterHead>();
  QLORAD_ASSIGN_OR_RETURN(const Task task, ReadAdapterTask(*adapter_dir));
  if (task != Task::kClassification) return std::optional<AdapterHead>();
  QLORAD_ASSIGN_OR_RETURN(AdapterHead head, ReadAdapterHead(*adapter_dir));
  if (head.head.weight.size(1) != base.hidden_size) {
    return InvalidArgument(*adapter_dir + "/adapter_model.safetensors: the score head is " +
                           std::to_string(head.head.weight.size(0)) + " x " +
                           std::to_string(head.head.weight.size(1)) +
                           ", but the model's hidden size is " + std::to_string(base.hidden_size));
  }
  return std::optional<AdapterHead>(std::move(head));
}

// Greedy in order: a shard closes before the tensor that would take it over the limit.
std::vector<std::vector<const OutputTensor*>> Shard(const std::vector<OutputTensor>& tensors,
                                                    int64_t max_bytes) {
  std::vector<std::vector<const OutputTensor*>> shards(1);
  int64_t in_shard = 0;
  for (const OutputTensor& t : tensors) {
    if (!shards.back().empty() && in_shard + t.bytes > max_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += t.bytes;
  }
  return shards;
}

std::string ShardName(size_t index, size_t count) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

// The base's config.json as the merged checkpoint's.
Status WriteConfig(json config, const std::string& out_dir, at::ScalarType dtype,
                   bool separate_lm_head) {
  config.erase("quantization_config");  // the merged weights are dense
  // A merged lm_head LoRA leaves the head unlike the embedding: transformers must not re-tie them.
  if (separate_lm_head) config["tie_word_embeddings"] = false;
  config["dtype"] = TorchDtypeName(dtype);
  if (config.contains("torch_dtype")) config["torch_dtype"] = TorchDtypeName(dtype);
  return WriteJsonFile(out_dir + "/config.json", config);
}

}  // namespace

StatusOr<ExportResult> ExportMerged(const ExportOptions& options) {
  // Read once: it gives the default dtype and becomes the output's config.json.
  const std::string config_path = options.model_dir + "/config.json";
  QLORAD_ASSIGN_OR_RETURN(json config, ReadJsonFile(config_path));
  QLORAD_ASSIGN_OR_RETURN(const LlamaConfig base, LlamaConfigFromJson(config, config_path));
  QLORAD_ASSIGN_OR_RETURN(const at::ScalarType dtype,
                          OutputDtype(options.dtype, base, config_path));
  if (options.max_shard_bytes <= 0) return InvalidArgument("--max-shard-bytes: must be positive");
  QLORAD_ASSIGN_OR_RETURN(const std::optional<AdapterHead> head,
                          ClassificationHeadOf(options.adapter_dir, base));
  if (head) {
    QLORAD_ASSIGN_OR_RETURN(
        config, SequenceClassificationConfig(std::move(config), head->head.labels, config_path));
  }
  // Shards of an earlier export would mix with these ones.
  QLORAD_RETURN_IF_ERROR(RequireNewOrEmptyDir(options.out_dir, "--out"));
  // The base loads in fp32 (NF4 projections stay packed until their shard is written).
  QLORAD_ASSIGN_OR_RETURN(
      LlamaModel model,
      LoadMergeBase(options.model_dir, options.adapter_dir, options.merge, options.merge.into,
                    head ? Task::kClassification : Task::kCausalLm));
  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) return Internal(options.out_dir + ": cannot create directory: " + ec.message());

  ExportResult result;
  if (head) {
    result.num_labels = static_cast<int64_t>(head->head.labels.size());
    if (config["pad_token_id"].is_null()) {
      result.notes.push_back(
          config_path +
          " sets neither pad_token_id nor eos_token_id, so the exported config.json has none: "
          "transformers classifies by each row's last token then, but one row per batch; set "
          "pad_token_id in the exported config.json to batch padded rows");
    }
  }
  const std::vector<OutputTensor> tensors = PlanTensors(
      model, dtype, head ? std::optional(head->head.weight) : std::nullopt, &result.merged_layers);
  const auto shards = Shard(tensors, options.max_shard_bytes);
  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1 ? "model.safetensors" : ShardName(s, shards.size());
    std::vector<std::pair<std::string, at::Tensor>> contents;
    for (const OutputTensor* t : shards[s]) {
      contents.emplace_back(t->name, t->make());
      weight_map[t->name] = file;
      result.total_bytes += t->bytes;
    }
    QLORAD_RETURN_IF_ERROR(SaveTensors(options.out_dir + "/" + file, contents, {{"format", "pt"}}));
  }
  result.tensors = static_cast<int64_t>(tensors.size());
  result.shards = static_cast<int64_t>(shards.size());
  if (shards.size() > 1) {
    QLORAD_RETURN_IF_ERROR(WriteJsonFile(
        options.out_dir + "/model.safetensors.index.json",
        {{"metadata", {{"total_size", result.total_bytes}}}, {"weight_map", weight_map}}));
  }
  QLORAD_RETURN_IF_ERROR(
      WriteConfig(std::move(config), options.out_dir, dtype, model->lm_head_linear()->has_lora()));
  for (const char* name : kCopiedFiles) {
    const fs::path from = fs::path(options.model_dir) / name;
    if (!fs::is_regular_file(from)) continue;
    fs::copy_file(from, fs::path(options.out_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return Internal(from.string() + ": cannot copy: " + ec.message());
  }
  return result;
}

}  // namespace qlorad::trainer
