#include "worker/trainer/trainer.h"

#include <ATen/DeviceAccelerator.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include "worker/trainer/adapter.h"
#include "worker/trainer/batcher.h"
#include "worker/trainer/bnb_checkpoint.h"
#include "worker/trainer/checkpoint.h"
#include "worker/trainer/chunked_loss.h"
#include "worker/trainer/cpu_threads.h"
#include "worker/trainer/dataset.h"
#include "worker/trainer/dtype_names.h"
#include "worker/trainer/fused_adamw.h"
#include "worker/trainer/llama_model.h"
#include "worker/trainer/lr_schedule.h"
#include "worker/trainer/model_config.h"
#include "worker/trainer/model_loader.h"
#include "worker/trainer/parallel/communicator.h"
#include "worker/trainer/parallel/parallelize.h"
#include "worker/trainer/phase_timer.h"
#include "worker/trainer/qlora.h"
#include "worker/trainer/step_profiler.h"
#include "worker/trainer/watchdog.h"

namespace qlorad::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Local ranks started by `qlorad-train launch` share a host: rank r takes GPU r (mod count).
// A rank started by a worker sees only its own GPU.
c10::DeviceIndex LocalCudaIndex() {
  const char* local_rank = std::getenv("QLORAD_LOCAL_RANK");
  const int count = static_cast<int>(torch::cuda::device_count());
  if (local_rank == nullptr || count == 0) return 0;
  return static_cast<c10::DeviceIndex>(std::atoi(local_rank) % count);
}

StatusOr<at::Device> ResolveDevice(const std::string& requested) {
  if (requested == "cpu") return at::Device(at::kCPU);
  const bool cuda = torch::cuda::is_available();
  if (requested == "cuda") {
    if (!cuda)
      return FailedPrecondition("resources.device: cuda requested but no CUDA device is visible");
    return at::Device(at::kCUDA, LocalCudaIndex());
  }
  if (requested == "auto")
    return cuda ? at::Device(at::kCUDA, LocalCudaIndex()) : at::Device(at::kCPU);
  return InvalidArgument("resources.device: expected auto, cpu or cuda, got '" + requested + "'");
}

void FillVram(at::Device device, events::Metrics* m) {
  if (!device.is_cuda()) return;  // the CPU has no caching allocator to report; stays 0
  const auto stats = at::accelerator::getDeviceStats(device.index());
  constexpr size_t kAllPools = 0;  // StatType::AGGREGATE
  m->vram_allocated_bytes = stats.allocated_bytes[kAllPools].current;
  m->vram_reserved_bytes = stats.reserved_bytes[kAllPools].current;
  m->vram_peak_bytes = stats.allocated_bytes[kAllPools].peak;
}

at::Tensor ToDevice(const std::vector<int64_t>& values, int64_t rows, int64_t cols,
                    at::Device device) {
  return at::tensor(values, at::kLong).view({rows, cols}).to(device);
}

// Everything a run holds between steps.
struct Session {
  LlamaModel model{nullptr};
  std::optional<Batcher> batcher;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::shared_ptr<parallel::Communicator> comm;
  std::unique_ptr<parallel::DataParallel> parallel;  // after model: it hooks the model's layers
  at::Device device{at::kCPU};
  // Tokens per lm_head + loss chunk (train.loss_chunk_size); 0: auto, each loss path its own size.
  int64_t loss_chunk_rows = 0;
};

StatusOr<Session> Prepare(const JobSpec& spec, at::Device device,
                          std::shared_ptr<parallel::Communicator> comm, EventSink& events) {
  Session s;
  s.device = device;
  s.comm = std::move(comm);
  QLORAD_ASSIGN_OR_RETURN(const at::ScalarType dtype,
                          ParsePrecision(spec.train.precision, "train.precision"));

  QLORAD_ASSIGN_OR_RETURN(const LlamaConfig config, LoadLlamaConfig(spec.model.path));
  // Data first: a bad dataset line should not wait for a multi-GB model to load.
  QLORAD_ASSIGN_OR_RETURN(Dataset dataset,
                          LoadDataset(spec.data, spec.model.path, {config.vocab_size}));
  if (dataset.skipped_lines > 0) {
    events.Log("warning", "skipped " + std::to_string(dataset.skipped_lines) + " bad lines in " +
                              spec.data.path + " (data.skip_bad_lines)");
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

  // A bitsandbytes 4-bit checkpoint trains on its stored NF4 weights. With quantization.type none
  // it is refused rather than dequantized: the user asked for a dense base the files do not hold.
  QLORAD_ASSIGN_OR_RETURN(const std::optional<BnbQuantization> bnb,
                          ReadBnbQuantization(spec.model.path));
  QuantizationSpec quantization = spec.quantization;
  if (bnb) {
    if (quantization.type != "nf4") {
      return InvalidArgument("quantization.type: '" + quantization.type + "', but model.path " +
                             spec.model.path +
                             " is a bitsandbytes 4-bit nf4 checkpoint; use type: nf4 (its stored "
                             "quantization is used) or an unquantized model");
    }
    events.Log("info", std::string("model is pre-quantized (bitsandbytes nf4, double_quant ") +
                           (bnb->double_quant ? "true" : "false") +
                           "): using its stored quantization; quantization.block_size and "
                           "double_quant do not apply");
    quantization.type = "none";  // nothing left to quantize
  }
  QLORAD_ASSIGN_OR_RETURN(const parallel::Strategy strategy,
                          parallel::ResolveStrategy(spec.parallel, s.comm->world_size()));
  // Under fsdp each rank keeps only its shard of the decoder as it loads, so a model whose NF4
  // weights exceed one GPU still loads on N of them.
  std::optional<ShardOnLoad> shard_on_load;
  if (strategy == parallel::Strategy::kFsdp) {
    shard_on_load = ShardOnLoad{s.comm->rank(), s.comm->world_size(),
                                spec.parallel.cpu_offload && s.device.is_cuda()};
  }
  events.Log("info", "loading model from " + spec.model.path + " onto " + s.device.str() +
                         (shard_on_load && shard_on_load->world_size > 1
                              ? " (this rank keeps 1/" + std::to_string(s.comm->world_size()) +
                                    " of the decoder weights)"
                              : ""));
  std::optional<QuantizeOnLoad> quantize_on_load;
  if (quantization.type == "nf4" && Nf4OpsAvailable(s.device.type())) {
    quantize_on_load = QuantizeOnLoad{quantization.block_size, quantization.double_quant};
  }
  QLORAD_ASSIGN_OR_RETURN(LoadedModel loaded,
                          LoadLlamaModel(spec.model.path, config, bnb.has_value(), s.device, dtype,
                                         quantize_on_load, shard_on_load));
  s.model = loaded.model;
  QLORAD_ASSIGN_OR_RETURN(const at::ScalarType lora_dtype,
                          ParsePrecision(spec.lora.compute_precision, "lora.compute_precision"));
  QLORAD_ASSIGN_OR_RETURN(QLoraSummary summary, ApplyQLora(s.model, quantization, spec.lora,
                                                           spec.train.seed, lora_dtype));
  summary.quantized_layers += loaded.prequantized_layers;
  events.Log("info", "quantized " + std::to_string(summary.quantized_layers) + " linear layers (" +
                         spec.quantization.type + "), LoRA on " +
                         std::to_string(summary.lora_layers) + " layers, " +
                         std::to_string(summary.trainable_parameters) + " trainable parameters");
  s.model->SetActivationCheckpointing(spec.train.activation_checkpointing);
  events.Log("info", spec.train.activation_checkpointing
                         ? "activation checkpointing: on (train.activation_checkpointing); each "
                           "decoder layer keeps its input only and runs again in backward"
                         : "activation checkpointing: off (train.activation_checkpointing)");
  if (spec.lora.init_from) {
    QLORAD_RETURN_IF_ERROR(LoadAdapter(s.model, *spec.lora.init_from));
    events.Log("info", "LoRA initialized from " + *spec.lora.init_from);
  }
  s.loss_chunk_rows = spec.train.loss_chunk_size;
  if (LoraParameters(s.model).empty()) {
    return InvalidArgument("lora.target_modules: no trainable parameters");
  }
  // Every rank built the same LoRA init (same seeds); parallelizing cuts its part, and takes the
  // frozen shards the load cut.
  if (strategy == parallel::Strategy::kFsdp && s.model->lm_head_linear()->has_lora()) {
    // fsdp shards the decoder projections only; a replicated head LoRA would need its own
    // gradient all-reduce and a place in the sharded checkpoints.
    return InvalidArgument(
        "lora.target_modules: lm_head with parallel.strategy fsdp is not supported yet; use ddp");
  }
  QLORAD_ASSIGN_OR_RETURN(s.parallel,
                          parallel::Parallelize(s.model, strategy, spec.parallel, s.comm,
                                                std::move(loaded.frozen_shards)));
  if (s.comm->world_size() > 1 || strategy != parallel::Strategy::kSingle) {
    events.Log("info", std::string("parallel: ") + parallel::StrategyName(strategy) + " over " +
                           std::to_string(s.comm->world_size()) + " ranks (" + s.comm->backend() +
                           ")");
  }
  s.optimizer = std::make_unique<torch::optim::AdamW>(
      s.parallel->Parameters(), torch::optim::AdamWOptions(spec.train.lr)
                                    .betas({spec.train.betas[0], spec.train.betas[1]})
                                    .eps(spec.train.eps)
                                    .weight_decay(spec.train.weight_decay));
  return s;
}

// This rank's micro-batches of one optimizer step. Every rank draws the whole global batch
// (micro_batch_size x grad_accum x world_size rows, in the order one rank would draw them) and
// keeps micro-batch i * world_size + rank, so N ranks train on exactly the rows of one; drawing
// is cheap next to the model. `global_valid` counts the valid labels of all of them, which is
// what the loss divides by, on every rank alike, with no collective.
std::vector<Batch> DrawStepBatches(Batcher& batcher, const TrainSpec& train, int rank, int world,
                                   int64_t* global_valid, int64_t* global_tokens) {
  std::vector<Batch> mine;
  for (int64_t i = 0; i < train.grad_accum; ++i) {
    for (int r = 0; r < world; ++r) {
      Batch b = batcher.Next(train.micro_batch_size);
      *global_valid += b.valid_labels;
      *global_tokens += b.tokens;
      if (r == rank) mine.push_back(std::move(b));
    }
  }
  return mine;
}

// Forward and backward over this rank's micro-batches of one optimizer step. The loss is the mean
// over every valid token of the step on all ranks (not a mean of per-micro-batch means), so
// grad_accum and the world size change nothing but memory; returns this rank's part of it, on
// the device ([1], fp64), ready for the all-reduce: the step reads it back once, after that.
at::Tensor AccumulateGradients(Session& s, const std::vector<Batch>& batches, int64_t valid) {
  const double denominator = static_cast<double>(std::max<int64_t>(valid, 1));
  at::Tensor total = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(s.device));
  for (const Batch& b : batches) {
    at::Tensor inputs = ToDevice(b.inputs, b.rows, b.seq_len, s.device);
    at::Tensor labels = ToDevice(b.labels, b.rows, b.seq_len, s.device);
    // The logits exist one chunk at a time (see chunked_loss.h); the fp32 loss math is unchanged.
    // Rows holding several documents keep them apart (block-diagonal attention, positions
    // restarting per document); others take the plain causal path.
    at::Tensor positions =
        b.packed_documents ? ToDevice(b.positions, b.rows, b.seq_len, s.device) : at::Tensor();
    const at::Tensor hidden = s.model->forward(inputs, positions);
    const at::Tensor flat = hidden.reshape({-1, hidden.size(-1)});
    // A head LoRA with dropout sees its own dropped copy of the hidden states (LossHead(flat)).
    at::Tensor loss = ChunkedCrossEntropy(flat, s.model->LossHead(flat), labels.view({-1}),
                                          {.ignore_index = kIgnoreLabel}, s.loss_chunk_rows)
                          .sum /
                      denominator;
    loss.backward();
    total += loss.detach().to(at::kDouble);
  }
  return total;
}

}  // namespace

StatusOr<TrainResult> Train(const JobSpec& spec, const TrainOptions& options, EventSink& events) {
  if (spec.resources.gpus > 1 && options.world_size == 1) {
    return InvalidArgument("resources.gpus: " + std::to_string(spec.resources.gpus) +
                           " ranks, but this process is a world of one; run it with "
                           "`qlorad-train launch --nproc " +
                           std::to_string(spec.resources.gpus) + "` or through the coordinator");
  }
  if (options.world_size > 1 && options.rendezvous.empty()) {
    return InvalidArgument("--rendezvous: world size " + std::to_string(options.world_size) +
                           " needs HOST:PORT of the ranks' store");
  }
  const auto started = Clock::now();
  QLORAD_ASSIGN_OR_RETURN(
      const at::Device device,
      ResolveDevice(options.device.empty() ? spec.resources.device : options.device));
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {  // else torch took it
    at::set_num_threads(CpuThreadsPerRank(device.is_cpu(), HostCpus(), LocalRanks()));
  }
  // Announced before loading: the agent learns the process is alive while a large model loads.
  events.Started(spec.train.max_steps, device.str(), options.rank, options.world_size);
  std::shared_ptr<parallel::Communicator> comm = parallel::MakeLocalCommunicator(device);
  if (!options.rendezvous.empty()) {
    // Before loading: a missing peer fails the job now, not after a multi-GB load.
    const auto collective_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::duration<double>(spec.parallel.timeout_s));
    QLORAD_ASSIGN_OR_RETURN(comm, parallel::Rendezvous({.address = options.rendezvous,
                                                        .rank = options.rank,
                                                        .world_size = options.world_size,
                                                        .device = device,
                                                        .collective_timeout = collective_timeout}));
  }
  QLORAD_ASSIGN_OR_RETURN(Session s, Prepare(spec, device, std::move(comm), events));
  const bool rank0 = options.rank == 0;
  // Started after the model loaded (ranks load at their own pace; collectives there have their
  // own timeout). Only with peers: then a step that outlives parallel.timeout_s already fails
  // their collectives, so the watchdog adds no limit of its own, while a single rank may
  // legitimately take long steps (a large model on a CPU) and has no peer to hold up.
  std::optional<Watchdog> watchdog;
  if (s.comm->world_size() > 1) {
    watchdog.emplace(options.rank, spec.parallel.timeout_s, [&events](const std::string& line) {
      events.Error(line, "parallel.timeout_s");
    });
  }
  CheckpointState state{0, s.batcher->position(), spec.train.seed};
  auto beat = [&](const std::string& doing) {
    if (watchdog) watchdog->Beat(doing, state.step);
  };
  const fs::path output_dir = fs::absolute(spec.checkpoint.output_dir);
  const std::string checkpoints_dir = (output_dir / "checkpoints").string();

  if (options.resume) {
    beat("loading the checkpoint");
    QLORAD_ASSIGN_OR_RETURN(const std::string dir, ResolveCheckpoint(*options.resume));
    QLORAD_ASSIGN_OR_RETURN(state, LoadCheckpoint(dir, *s.parallel, *s.optimizer));
    if (state.seed != spec.train.seed) {
      return InvalidArgument("train.seed: the checkpoint " + dir + " was made with seed " +
                             std::to_string(state.seed) + ", the spec says " +
                             std::to_string(spec.train.seed));
    }
    s.batcher->Seek(state.data);
    events.Log("info", "resumed from " + dir + " at step " + std::to_string(state.step));
  }

  TrainResult result;
  result.steps = state.step;
  const int64_t total_steps = spec.train.max_steps;
  s.model->train();
  if (s.device.is_cuda()) at::accelerator::resetPeakStats(s.device.index());

  // Every rank writes its shard (see checkpoint.h); rank 0 announces the checkpoint.
  auto checkpoint = [&]() -> Status {
    state.data = s.batcher->position();
    beat("saving the checkpoint of step " + std::to_string(state.step));
    QLORAD_ASSIGN_OR_RETURN(const std::string path,
                            SaveCheckpoint(checkpoints_dir, *s.parallel, *s.optimizer, spec, state,
                                           spec.checkpoint.keep));
    if (rank0) events.Checkpoint(state.step, path);
    return Status::Ok();
  };

  const int64_t first_step = state.step;
  PhaseTimer phases(s.device, PhaseTimingRequested());
  StepProfiler profiler(options.rank, first_step, s.device);
  for (int64_t step = state.step; step < total_steps; ++step) {
    const auto step_started = Clock::now();
    beat("running step " + std::to_string(step + 1) + " of " + std::to_string(total_steps));
    phases.StartStep();
    profiler.BeginStep(step);
    const double lr = LearningRateAt(spec.train, step);
    for (auto& group : s.optimizer->param_groups()) group.options().set_lr(lr);

    int64_t valid = 0;
    int64_t tokens = 0;
    const std::vector<Batch> batches =
        DrawStepBatches(*s.batcher, spec.train, options.rank, options.world_size, &valid, &tokens);
    s.optimizer->zero_grad();
    torch::manual_seed(StepSeed(spec.train.seed, step));  // dropout masks of this step
    phases.End("data");
    const at::Tensor step_loss = AccumulateGradients(s, batches, valid);
    phases.End("forward+backward");
    QLORAD_RETURN_IF_ERROR(s.parallel->FinishBackward());
    phases.End("gradient reduction");
    // An infinite bound measures the norm without changing the gradients.
    const double max_norm =
        spec.train.max_grad_norm.value_or(std::numeric_limits<double>::infinity());
    QLORAD_ASSIGN_OR_RETURN(const at::Tensor grad_norm_on_device,
                            s.parallel->ClipGradNorm(max_norm));
    phases.End("clip");
    FusedAdamWStep(*s.optimizer);
    phases.End("optimizer");
    // The host waits for the device once per step, here, after the whole step is queued: one
    // all-reduce carries the loss and the stop request (ranks see a stop signal at different
    // moments and must stop at the same step), and one copy brings them back with the norm.
    at::Tensor shared =
        at::cat({step_loss, at::full({1}, options.should_stop() ? 1.0 : 0.0, step_loss.options())});
    QLORAD_RETURN_IF_ERROR(s.comm->AllReduceSum(shared)->Wait());
    const at::Tensor readback = at::cat({shared, grad_norm_on_device.to(shared.device())}).cpu();
    const double loss = readback[0].item<double>();
    const bool stop_requested = readback[1].item<double>() > 0;
    const double grad_norm = readback[2].item<double>();
    phases.End("all-reduce+readback");
    state.step = step + 1;
    result.steps = state.step;
    result.losses.push_back(loss);

    events::Metrics m;
    m.step = state.step;
    m.total_steps = total_steps;
    m.loss = loss;
    m.lr = lr;
    m.grad_norm = grad_norm;
    m.tokens_per_s = static_cast<double>(tokens) / std::max(SecondsSince(step_started), 1e-9);
    FillVram(s.device, &m);
    m.wall_time_s = SecondsSince(started);
    m.rank = options.rank;
    events.Metrics(m);
    if (!std::isfinite(loss)) {
      return Internal("training diverged: loss is " + std::to_string(loss) + " at step " +
                      std::to_string(state.step) + " (try a lower train.lr or fp32 precision)");
    }

    if (stop_requested) {
      QLORAD_RETURN_IF_ERROR(checkpoint());
      result.stopped = true;
      return result;
    }
    const int64_t every = spec.checkpoint.every_steps;
    if (every > 0 && state.step % every == 0 && state.step < total_steps) {
      QLORAD_RETURN_IF_ERROR(checkpoint());
    }
    phases.End("metrics+checkpoint");
    const std::string trace = profiler.EndStep(step);
    if (!trace.empty()) events.Log("info", "Kineto profile written to " + trace);
  }
  if (phases.enabled()) events.Log("info", "phase timing: " + phases.Summary());

  const int64_t steps_run = result.steps - first_step;
  if (s.comm->world_size() > 1 && steps_run > 0) {
    const int64_t received = s.comm->bytes_received();
    events.Log("info", "communication: rank " + std::to_string(options.rank) + " received " +
                           std::to_string(received) + " bytes in collectives over " +
                           std::to_string(steps_run) + " steps (" +
                           std::to_string(received / steps_run) + " bytes per step)");
  }

  // Rank 0 alone writes the adapter, receiving it one gathered tensor at a time.
  const std::string adapter_dir = (output_dir / "adapter").string();
  beat("saving the adapter");
  QLORAD_RETURN_IF_ERROR(SaveAdapterFromRanks(*s.parallel, spec, adapter_dir));
  result.adapter_path = adapter_dir;
  events.Done(result.steps, adapter_dir, result.losses.empty() ? 0.0 : result.losses.back());
  return result;
}

}  // namespace qlorad::trainer
