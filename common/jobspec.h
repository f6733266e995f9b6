// The job spec: one YAML file that works for `qloractl submit` and `qlorad-train run`.
// Parsing validates everything up front; an unknown key or a bad value is an INVALID_ARGUMENT
// whose message starts with the dotted field name ("train.lr: must be > 0, got -1").
// Relative paths are kept as written; they resolve against the working directory of the
// process that runs the trainer.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/spec_choices.h"
#include "common/status.h"

namespace qlorad {

struct ModelSpec {
  std::string path;  // a Hugging Face model directory
};

struct QuantizationSpec {
  QuantizationType type = QuantizationType::kNf4;
  bool double_quant = true;
  int block_size = 64;
};

struct LoraSpec {
  int r = 16;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
  std::optional<std::string> init_from;  // a PEFT adapter directory
  bool use_rslora = false;
  // The adapters' matmuls: auto (resolved to train.precision by the parser: what autocast gives
  // a Hugging Face Trainer run, and fsdp then gathers LoRA in that dtype, reducing in fp32), or
  // fp32 (PEFT's choice without autocast: the input is upcast; slower, more memory).
  // nullopt is auto, which only a spec built in code keeps: the parser resolves it.
  std::optional<Precision> compute_precision;

  // alpha / r, or alpha / sqrt(r) with rsLoRA.
  double Scale() const;
};

struct DataSpec {
  std::string path;
  std::string format =
      "auto";  // auto | text | input_ids | alpaca | messages | sharegpt | prompt_completion
  int64_t max_seq_len = 2048;
  bool packing = true;
  bool shuffle = true;
  uint64_t seed = 0;
  bool train_on_completions_only = true;
  std::string chat_template = "auto";
  bool skip_bad_lines = false;
  // data.validation: held-out examples evaluated during training, either a file (read like
  // `path`) or a fraction in (0, 1) of `path`'s examples, split off by `seed` before training
  // sees any (data/validation_split.h). Neither set: no evaluation.
  std::string validation_path;
  double validation_fraction = 0;

  bool HasValidation() const { return !validation_path.empty() || validation_fraction > 0; }

  // task classification: the record field holding each example's label, and the label set in
  // class-index order (empty: the values found under label_field in `path`, sorted; see
  // worker/trainer/data/class_labels.h). A label is a string or an integer, read as its text.
  std::string label_field;
  std::vector<std::string> labels;
};

// train.early_stopping: stop once `patience` evaluations in a row have not lowered the best eval
// loss by more than `min_delta`.
struct EarlyStoppingSpec {
  int64_t patience = 3;
  double min_delta = 0.0;
};

struct TrainSpec {
  int64_t max_steps = 100;
  int64_t micro_batch_size = 4;
  int64_t grad_accum = 1;
  double lr = 2.0e-4;
  Scheduler scheduler = Scheduler::kCosine;
  int64_t warmup_steps = 10;
  double weight_decay = 0.0;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1.0e-8;
  std::optional<double> max_grad_norm = 1.0;  // null disables clipping
  uint64_t seed = 0;
  Precision precision = Precision::kBf16;
  // true: each decoder layer keeps only its input in forward and runs again in backward (Hugging
  // Face's gradient_checkpointing), activation memory for one more forward per layer per step;
  // auto: off when the step fits in the device's memory without it, on otherwise.
  CheckpointingChoice activation_checkpointing = CheckpointingChoice::kAuto;
  // true: under checkpointing, the layers' kept inputs wait in page-locked host memory (copied on
  // a side stream) instead of on the GPU; auto: on when checkpointing is on and the inputs would
  // not fit on the device. Needs checkpointing (true or auto, which true then turns on).
  CheckpointingChoice activation_offload = CheckpointingChoice::kAuto;
  int64_t loss_chunk_size = 0;  // 0 = auto
  // With data.validation: evaluate every eval_steps optimizer steps and after the last one, on
  // at most eval_batches micro-batches of micro_batch_size rows (nullopt: the whole set; the
  // same rows every time, so evaluations compare).
  int64_t eval_steps = 50;
  std::optional<int64_t> eval_batches;
  std::optional<EarlyStoppingSpec> early_stopping;
};

struct ResourcesSpec {
  int gpus = 1;  // world size
  DeviceChoice device = DeviceChoice::kAuto;
  // The trainer refuses a job whose memory estimate (common/memory_estimate.h) exceeds what the
  // GPU has free, and the coordinator places it only on a worker whose GPU has room; true skips
  // both (an estimate can be wrong).
  bool ignore_memory_estimate = false;
};

struct SchedulingSpec {
  int priority = 50;  // higher runs first
  int max_restarts = 3;
};

struct ParallelSpec {
  StrategyChoice strategy = StrategyChoice::kAuto;
  bool reshard_after_forward = true;
  bool cpu_offload = false;
  // Seconds a rank may wait in one collective, and may go without finishing a step (the trainer's
  // watchdog), before it fails the job; torch's NCCL default. A hung rank then costs this long,
  // not forever.
  double timeout_s = 600;
};

struct CheckpointSpec {
  int64_t every_steps = 50;  // 0 disables periodic checkpoints
  // Newest periodic checkpoints kept. With data.validation the one of the lowest eval loss is
  // kept apart too, in <output_dir>/best/step-N, whatever `keep` drops.
  int keep = 3;
  std::string output_dir;  // default: runs/<name>
};

struct JobSpec {
  std::string name;
  // causal_lm: next-token prediction. classification: one label per example from a score head
  // over the last token's hidden state (Hugging Face's LlamaForSequenceClassification), trained
  // with the LoRA adapters; needs data.label_field, pads each example to its own row.
  Task task = Task::kCausalLm;
  ModelSpec model;
  QuantizationSpec quantization;
  LoraSpec lora;
  DataSpec data;
  TrainSpec train;
  ResourcesSpec resources;
  SchedulingSpec scheduling;
  ParallelSpec parallel;
  CheckpointSpec checkpoint;
};

// Parses and validates a spec. Does not touch the file system (the coordinator may not see the
// worker's files); see CheckJobSpecFiles for that.
StatusOr<JobSpec> ParseJobSpec(const std::string& yaml_text);
StatusOr<JobSpec> LoadJobSpecFile(const std::string& path);

// Checks that the files the spec names exist where this process would read them
// (model.path with a config.json, data.path, lora.init_from). Errors name the field.
Status CheckJobSpecFiles(const JobSpec& spec);

}  // namespace qlorad
