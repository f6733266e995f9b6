#include "worker/trainer/cli/estimate_cli.h"

#include <torch/cuda.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/host_memory.h"
#include "common/jobspec.h"
#include "common/memory_estimate.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/parallel/parallelize.h"
#include "worker/trainer/runtime/device.h"
#include "worker/trainer/runtime/dtype_names.h"
#include "worker/trainer/train/checkpointing_choice.h"
#include "worker/trainer/train/memory_check.h"

namespace qlorad::trainer {
namespace {

// The device to decide against: --free-gib, else the CUDA device's free memory.
std::optional<int64_t> FreeBytesFor(const EstimateCli& cli) {
  if (cli.free_gib) return static_cast<int64_t>(*cli.free_gib * (int64_t{1} << 30));
  if (!torch::cuda::is_available()) return std::nullopt;
  return FreeMemoryOf(at::Device(at::kCUDA, 0));
}

// The host memory offload's inputs are judged against: --host-gib, else this host's available.
std::optional<int64_t> HostBytesFor(const EstimateCli& cli) {
  if (cli.host_gib) return static_cast<int64_t>(*cli.host_gib * (int64_t{1} << 30));
  return HostAvailableBytes();
}

std::string Row(const std::string& name, int64_t bytes, const std::string& note = "") {
  char text[160];
  std::snprintf(text, sizeof(text), "  %-28s %9.2f GiB%s%s\n", name.c_str(),
                static_cast<double>(bytes) / (int64_t{1} << 30), note.empty() ? "" : "   ",
                note.c_str());
  return text;
}

}  // namespace

void AddEstimateSubcommand(CLI::App& app, EstimateCli& cli) {
  cli.estimate = app.add_subcommand(
      "estimate", "the job's GPU memory estimate, term by term, and whether it fits a device");
  cli.estimate->add_option("spec", cli.spec_path, "job spec (YAML)")->required();
  cli.estimate
      ->add_option("--free-gib", cli.free_gib,
                   "free GPU memory to decide against (default: the CUDA device's, if any)")
      ->check(CLI::PositiveNumber);
  cli.estimate
      ->add_option("--host-gib", cli.host_gib,
                   "available host memory to judge activation offload's page-locked inputs "
                   "against (default: this host's)")
      ->check(CLI::PositiveNumber);
  cli.estimate->add_flag("--json", cli.json, "one JSON object on stdout");
}

std::optional<Status> RunEstimateSubcommand(const EstimateCli& cli) {
  if (cli.estimate == nullptr || !cli.estimate->parsed()) return std::nullopt;
  StatusOr<JobSpec> spec = LoadJobSpecFile(cli.spec_path);
  if (!spec.ok()) return spec.status();
  StatusOr<LlamaConfig> config = LoadLlamaConfig(spec->model.path);
  if (!config.ok()) return config.status();
  const int world_size = spec->resources.gpus;
  StatusOr<parallel::Strategy> strategy = parallel::ResolveStrategy(spec->parallel, world_size);
  if (!strategy.ok()) return strategy.status();

  MemoryJob job = MemoryJobOfRun(*spec, *config, world_size, *strategy);
  const std::optional<int64_t> free = FreeBytesFor(cli);
  std::string checkpointing_why = "auto taken as on: no device to decide against";
  std::string offload_why = checkpointing_why;
  if (free) {
    const ActivationChoices choices = ResolveActivations(*spec, job, free);
    job.checkpointing = choices.checkpointing;
    job.offload = choices.offload;
    checkpointing_why = choices.checkpointing_why;
    offload_why = choices.offload_why;
  } else {
    // The spec's explicit choices stand; MemoryJobOf took the autos as on.
    if (spec->train.activation_checkpointing != CheckpointingChoice::kAuto)
      checkpointing_why = "train.activation_checkpointing";
    if (spec->train.activation_offload != CheckpointingChoice::kAuto)
      offload_why = "train.activation_offload";
  }
  // The host memory offload is judged against, read once (only with offload on).
  const std::optional<int64_t> host_figure =
      job.checkpointing && job.offload ? HostBytesFor(cli) : std::nullopt;
  // Decided as the trainer would on a GPU with `free` (a CPU's trainer keeps nothing).
  const at::Device device = free ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  const at::ScalarType dtype = ScalarTypeOf(spec->train.precision);
  const KeepChoice keep = PlanKeepAttention(job, free, host_figure, device, dtype);
  job.keep_attention = keep.on;
  const KeepChoice keep_mlp = PlanKeepMlp(job, free, host_figure, device, dtype);
  job.keep_mlp = keep_mlp.on;
  const MemoryEstimate e = EstimateMemory(job);
  // Judged only against a device (plain values: GCC misreads optionals here as uninitialized).
  const bool judged = free.has_value();
  const int64_t free_bytes = free.value_or(0);
  const bool fits = judged && e.peak <= UsableBytes(free_bytes);
  const int64_t longest = judged ? LargestFittingSeqLen(job, free_bytes) : 0;
  const std::vector<std::string> changes =
      judged && !fits ? ChangesThatFit(job, free_bytes) : std::vector<std::string>{};
  // Offload's inputs against the host (only with offload on, and a host figure to judge by).
  const int64_t pinned = OffloadHostBytes(job);
  const std::optional<int64_t> host = pinned > 0 ? host_figure : std::nullopt;
  const bool host_judged = host.has_value();
  const int64_t host_bytes = host.value_or(0);
  const bool host_fits = host_judged && pinned <= UsableHostBytes(host_bytes);
  const int64_t host_longest = host_judged ? LargestOffloadSeqLen(job, host_bytes) : 0;

  if (cli.json) {
    // A verdict's value, or null where there was nothing to judge against.
    const auto or_null = [](bool judged_here, const auto& v) {
      return judged_here ? nlohmann::json(v) : nlohmann::json();
    };
    nlohmann::json out = {{"peak_bytes", e.peak},
                          {"phase", e.phase},
                          {"terms",
                           {{"frozen_weights", e.frozen_weights},
                            {"lora_state", e.lora_state},
                            {"kept_activations", e.kept_activations},
                            {"layer_working_set", e.layer_working_set},
                            {"loss", e.loss},
                            {"workspace", e.workspace}}},
                          {"device_bytes_needed", DeviceBytesNeeded(e.peak)},
                          {"lora_parameters", e.lora_parameters},
                          {"micro_batch_size", job.micro_batch_size},
                          {"seq_len", job.seq_len},
                          {"activation_checkpointing", job.checkpointing},
                          {"activation_offload", job.offload},
                          {"activation_checkpointing_why", checkpointing_why},
                          {"activation_offload_why", offload_why},
                          {"keep_attention", job.keep_attention},
                          {"keep_attention_why", keep.why},
                          {"keep_mlp", job.keep_mlp},
                          {"keep_mlp_why", keep_mlp.why},
                          {"free_bytes", or_null(judged, free_bytes)},
                          {"fits", or_null(judged, fits)},
                          {"largest_seq_len", or_null(judged, longest)},
                          {"changes_that_fit", changes},
                          {"offload_host_bytes", pinned},
                          {"host_available_bytes", or_null(host_judged, host_bytes)},
                          {"host_fits", or_null(host_judged, host_fits)},
                          {"largest_offload_seq_len", or_null(host_judged, host_longest)}};
    std::cout << out.dump() << "\n";
    return Status::Ok();
  }
  std::string text =
      "memory estimate of " + cli.spec_path + ": " + std::to_string(job.micro_batch_size) + " x " +
      std::to_string(job.seq_len) + " tokens per micro-batch, " +
      std::to_string(job.model.num_hidden_layers) + " layers of hidden size " +
      std::to_string(job.model.hidden_size) + ", activation checkpointing " +
      (job.checkpointing ? "on" : "off") + " (" + checkpointing_why + "), offload " +
      (job.offload ? "on" : "off") + " (" + offload_why + ")" +
      (job.offload
           ? std::string(", attention outputs kept for the recompute ") +
                 (job.keep_attention ? "on" : "off") + " (" + keep.why + "), MLP gate|up kept " +
                 (job.keep_mlp ? "on" : "off") + " (" + keep_mlp.why + ")"
           : std::string()) +
      "\n";
  text += Row("frozen weights", e.frozen_weights) + Row("LoRA and AdamW state", e.lora_state) +
          Row("kept activations", e.kept_activations) +
          Row("one layer's backward", e.layer_working_set) + Row("loss", e.loss) +
          Row("workspace", e.workspace) + Row("peak (allocated)", e.peak, e.phase) +
          Row("GPU memory needed", DeviceBytesNeeded(e.peak), "peak / 0.9 + the CUDA context");
  if (judged) {
    text +=
        "device: " + FormatMemory(free_bytes) + " free, " + FormatMemory(UsableBytes(free_bytes)) +
        " usable: " + (fits ? "fits" : "does not fit") +
        "; the largest data.max_seq_len that fits with these options: " + std::to_string(longest) +
        "\n";
    for (const std::string& change : changes) text += "  would fit with " + change + "\n";
  }
  if (pinned > 0) {
    text += Row("host memory (offload)", pinned,
                std::string("page-locked: every layer's input") +
                    (job.keep_attention ? ", attention output" : "") +
                    (job.keep_mlp ? ", gate|up" : ""));
  }
  if (host_judged) {
    text += "host: " + FormatMemory(host_bytes) + " available, " +
            FormatMemory(UsableHostBytes(host_bytes)) + " usable: offload's inputs " +
            (host_fits ? "fit" : "do not fit") +
            "; the longest data.max_seq_len whose inputs fit: " + std::to_string(host_longest) +
            "\n";
  }
  std::cout << text;
  return Status::Ok();
}

}  // namespace qlorad::trainer
