#include "worker/trainer/train/setup.h"

#include <string>
#include <utility>

#include "common/host_memory.h"
#include "worker/trainer/data/class_labels.h"
#include "worker/trainer/data/dataset.h"
#include "worker/trainer/data/validation_split.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/model/model_loader.h"
#include "worker/trainer/parallel/activation_recompute.h"
#include "worker/trainer/parallel/shard_on_load.h"
#include "worker/trainer/runtime/device.h"
#include "worker/trainer/runtime/dtype_names.h"
#include "worker/trainer/train/checkpointing_choice.h"
#include "worker/trainer/train/memory_check.h"
#include "worker/trainer/weights/bnb4bit_reader.h"

namespace qlorad::trainer {

namespace {

void LogSkipped(const Dataset& dataset, const std::string& path, EventSink& events) {
  if (dataset.skipped_lines > 0) {
    events.Log("warning", "skipped " + std::to_string(dataset.skipped_lines) + " bad lines in " +
                              path + " (data.skip_bad_lines)");
  }
}

// data.validation: a file read like data.path, or a fraction of `train` split off (and removed
// from it) before any batch is drawn. Unshuffled: every evaluation sees the same rows.
Status SetUpValidation(const JobSpec& spec, const LlamaConfig& config, Dataset& train, Session& s,
                       const ClassLabels* classes, EventSink& events) {
  const DataSpec& data = spec.data;
  std::vector<Document> documents;
  std::string source;
  if (data.validation_fraction > 0) {
    QLORAD_ASSIGN_OR_RETURN(
        SplitDocuments split,
        SplitOffValidation(std::move(train.documents), data.validation_fraction, data.seed));
    train.documents = std::move(split.train);
    documents = std::move(split.validation);
    source = "held out of " + data.path;
  } else {
    DataSpec file = data;
    file.path = data.validation_path;
    QLORAD_ASSIGN_OR_RETURN(Dataset dataset, LoadDataset(file, spec.model.path,
                                                         {.vocab_size = config.vocab_size,
                                                          .field = "data.validation",
                                                          .classes = classes}));
    LogSkipped(dataset, file.path, events);
    documents = std::move(dataset.documents);
    source = "from " + data.validation_path;
  }
  const size_t count = documents.size();
  StatusOr<Batcher> batcher = Batcher::Create(
      std::move(documents), {data.max_seq_len, data.packing, /*shuffle=*/false, data.seed});
  if (!batcher.ok()) {
    return InvalidArgument("data.validation: no example has a token to predict");
  }
  events.Log("info", "validation: " + std::to_string(count) + " examples " + source + ", " +
                         std::to_string(batcher->rows_per_epoch()) + " rows");
  s.validation.emplace(std::move(batcher).value());
  return Status::Ok();
}

// Returns task: classification's labels (none for causal_lm).
StatusOr<std::optional<ClassLabels>> SetUpData(const JobSpec& spec, const LlamaConfig& config,
                                               Session& s, EventSink& events) {
  std::optional<ClassLabels> classes;
  if (spec.task == Task::kClassification) {
    QLORAD_ASSIGN_OR_RETURN(classes, ResolveClassLabels(spec.data));
    std::string names;
    for (const std::string& n : classes->names) names += (names.empty() ? "" : ", ") + n;
    events.Log("info", "classification: " + std::to_string(classes->names.size()) + " labels of '" +
                           classes->field + "' in class order [" + names + "]");
  }
  const ClassLabels* class_ptr = classes ? &*classes : nullptr;
  QLORAD_ASSIGN_OR_RETURN(Dataset dataset,
                          LoadDataset(spec.data, spec.model.path,
                                      {.vocab_size = config.vocab_size, .classes = class_ptr}));
  LogSkipped(dataset, spec.data.path, events);
  if (spec.data.HasValidation()) {
    QLORAD_RETURN_IF_ERROR(SetUpValidation(spec, config, dataset, s, class_ptr, events));
  }
  const size_t documents = dataset.documents.size();
  QLORAD_ASSIGN_OR_RETURN(
      Batcher batcher,
      Batcher::Create(std::move(dataset.documents), {spec.data.max_seq_len, spec.data.packing,
                                                     spec.data.shuffle, spec.data.seed}));
  events.Log("info", "data: " + std::to_string(documents) + " examples, " +
                         std::to_string(batcher.rows_per_epoch()) + " rows of up to " +
                         std::to_string(spec.data.max_seq_len) + " tokens per epoch");
  s.batcher.emplace(std::move(batcher));
  return classes;
}

// What is left to quantize after loading. A bitsandbytes 4-bit checkpoint trains on its stored
// NF4 weights: nothing is left. With quantization.type none it is refused rather than
// dequantized: the user asked for a dense base the files do not hold.
StatusOr<QuantizationSpec> QuantizationAfterLoad(const JobSpec& spec,
                                                 const std::optional<BnbQuantization>& bnb,
                                                 EventSink& events) {
  QuantizationSpec quantization = spec.quantization;
  if (!bnb) return quantization;
  if (quantization.type != QuantizationType::kNf4) {
    return InvalidArgument("quantization.type: '" + NameOf(quantization.type) +
                           "', but model.path " + spec.model.path +
                           " is a bitsandbytes 4-bit nf4 checkpoint; use type: nf4 (its stored "
                           "quantization is used) or an unquantized model");
  }
  events.Log("info", std::string("model is pre-quantized (bitsandbytes nf4, double_quant ") +
                         (bnb->double_quant ? "true" : "false") +
                         "): using its stored quantization; quantization.block_size and "
                         "double_quant do not apply");
  quantization.type = QuantizationType::kNone;
  return quantization;
}

}  // namespace

StatusOr<Session> SetUp(const JobSpec& spec, at::Device device,
                        std::shared_ptr<parallel::Communicator> comm, EventSink& events) {
  Session s;
  s.device = device;
  s.comm = std::move(comm);
  s.loss_chunk_rows = spec.train.loss_chunk_size;
  const at::ScalarType dtype = ScalarTypeOf(spec.train.precision);
  const at::ScalarType lora_dtype =
      ScalarTypeOf(spec.lora.compute_precision.value_or(spec.train.precision));
  QLORAD_ASSIGN_OR_RETURN(const parallel::Strategy strategy,
                          parallel::ResolveStrategy(spec.parallel, s.comm->world_size()));
  QLORAD_ASSIGN_OR_RETURN(const LlamaConfig config, LoadLlamaConfig(spec.model.path));

  // 0. Memory: the estimate against what the device has free before anything is loaded decides
  // the activation options' autos and refuses a job that will not fit. Every rank takes part in
  // the decision (rank 0's autos win), so none is left waiting in a collective.
  const MemoryJob memory = MemoryJobOfRun(spec, config, s.comm->world_size(), strategy);
  const std::optional<int64_t> free_bytes = FreeMemoryOf(s.device);
  const auto [checkpointing, offload] =
      PlanActivations(spec, memory, free_bytes, s.device, *s.comm);
  MemoryJob planned = memory;
  planned.checkpointing = checkpointing.on;
  planned.offload = offload.on;
  const std::optional<int64_t> host_bytes =
      planned.checkpointing && planned.offload ? HostAvailableBytes() : std::nullopt;
  const KeepChoice keep = PlanKeepAttention(planned, free_bytes, host_bytes, s.device, dtype);
  planned.keep_attention = keep.on;
  const KeepChoice keep_mlp = PlanKeepMlp(planned, free_bytes, host_bytes, s.device, dtype);
  planned.keep_mlp = keep_mlp.on;
  QLORAD_RETURN_IF_ERROR(CheckMemory(spec, planned, free_bytes, events));
  QLORAD_RETURN_IF_ERROR(CheckHostMemory(spec, planned, s.device.is_cuda(), host_bytes, events));

  // 1. Data.
  QLORAD_ASSIGN_OR_RETURN(const std::optional<ClassLabels> classes,
                          SetUpData(spec, config, s, events));

  // 2. The model.
  QLORAD_ASSIGN_OR_RETURN(const std::optional<BnbQuantization> bnb,
                          ReadBnbQuantization(spec.model.path));
  QLORAD_ASSIGN_OR_RETURN(QuantizationSpec quantization, QuantizationAfterLoad(spec, bnb, events));
  std::optional<parallel::ShardOnLoad> shard_on_load;
  if (strategy == parallel::Strategy::kFsdp) {
    shard_on_load.emplace(s.comm->rank(), s.comm->world_size(),
                          spec.parallel.cpu_offload && s.device.is_cuda());
  }
  events.Log("info", "loading model from " + spec.model.path + " onto " + s.device.str() +
                         (shard_on_load && s.comm->world_size() > 1
                              ? " (this rank keeps 1/" + std::to_string(s.comm->world_size()) +
                                    " of the decoder weights)"
                              : ""));
  std::optional<QuantizeOnLoad> quantize_on_load;
  if (quantization.type == QuantizationType::kNf4 && Nf4OpsAvailable(s.device.type())) {
    quantize_on_load = QuantizeOnLoad{quantization.block_size, quantization.double_quant};
  }
  QLORAD_ASSIGN_OR_RETURN(
      const LoadedModel loaded,
      LoadLlamaModel(spec.model.path, config, bnb.has_value(), s.device, dtype, quantize_on_load,
                     shard_on_load ? &*shard_on_load : nullptr));
  s.model = loaded.model;

  // 3. QLoRA, recompute and data parallelism, in parallelize's order.
  QLORAD_ASSIGN_OR_RETURN(
      parallel::Parallelized parallelized,
      parallel::Parallelize(
          s.model,
          {.strategy = strategy,
           .quantization = quantization,
           .lora = spec.lora,
           .seed = spec.train.seed,
           .lora_dtype = lora_dtype,
           .parallel = spec.parallel},
          s.comm, shard_on_load ? shard_on_load->TakeShards() : parallel::FrozenShards{}));
  s.parallel = std::move(parallelized.data_parallel);
  const QLoraSummary& summary = parallelized.qlora;
  events.Log("info", "quantized " +
                         std::to_string(summary.quantized_layers + loaded.prequantized_layers) +
                         " linear layers (" + NameOf(spec.quantization.type) + "), LoRA on " +
                         std::to_string(summary.lora_layers) + " layers, " +
                         std::to_string(summary.trainable_parameters) + " trainable parameters");
  if (spec.lora.init_from) events.Log("info", "LoRA initialized from " + *spec.lora.init_from);
  // Recompute wraps whole decoder layers whatever holds their weights: fsdp's gathers run inside
  // the layer, so the recompute gathers again (fsdp.h).
  s.offload = checkpointing.on && offload.on;
  const int64_t resident_layers =
      s.offload ? ResidentLayersFromEnvironment(config.num_hidden_layers) : 0;
  if (checkpointing.on)
    ApplyActivationRecompute(s.model, offload.on, {.attention = keep.on, .mlp = keep_mlp.on},
                             /*draws_random=*/spec.lora.dropout > 0, resident_layers);
  events.Log("info", checkpointing.on
                         ? "activation checkpointing: on (" + checkpointing.why +
                               "); each decoder layer keeps its input only and runs again in "
                               "backward"
                         : "activation checkpointing: off (" + checkpointing.why + ")");
  if (checkpointing.on) {
    events.Log("info", offload.on ? "activation offload: on (" + offload.why +
                                        "); the kept inputs wait in host memory"
                                  : "activation offload: off (" + offload.why + ")");
    if (resident_layers > 0) {
      events.Log("info", "the last " + std::to_string(resident_layers) +
                             " decoder layers keep their checkpointed tensors on the device "
                             "(QLORAD_RESIDENT_LAYERS)");
    }
    if (offload.on) {
      events.Log("info", std::string("attention outputs kept for the recompute: ") +
                             (keep.on ? "on (" + keep.why +
                                            "); each layer's recompute skips attention's forward"
                                      : "off (" + keep.why + ")"));
      events.Log("info", std::string("MLP gate|up kept for backward: ") +
                             (keep_mlp.on ? "on (" + keep_mlp.why +
                                                "); each layer's backward skips the gate|up GEMM"
                                          : "off (" + keep_mlp.why + ")"));
    }
  }
  if (s.comm->world_size() > 1 || strategy != parallel::Strategy::kSingle) {
    events.Log("info", std::string("parallel: ") + parallel::StrategyName(strategy) + " over " +
                           std::to_string(s.comm->world_size()) + " ranks (" + s.comm->backend() +
                           ")");
  }

  // 4. The optimizer, over the adapters and a classification head.
  std::vector<at::Tensor> trained = s.parallel->Parameters();
  if (classes) {
    QLORAD_ASSIGN_OR_RETURN(
        s.classifier, MakeClassificationHead(spec.model.path, config.hidden_size, classes->names,
                                             spec.train.seed, s.device));
    trained.push_back(s.classifier->weight);
    s.parallel->AddWholeParameter("score", s.classifier->weight);
  }
  s.optimizer = std::make_unique<torch::optim::AdamW>(
      trained, torch::optim::AdamWOptions(spec.train.lr)
                   .betas({spec.train.betas[0], spec.train.betas[1]})
                   .eps(spec.train.eps)
                   .weight_decay(spec.train.weight_decay));
  return s;
}

}  // namespace qlorad::trainer
