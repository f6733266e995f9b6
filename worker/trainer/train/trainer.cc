#include "worker/trainer/train/trainer.h"

#include <ATen/DeviceAccelerator.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "worker/trainer/data/class_labels.h"
#include "worker/trainer/loss/chunked_loss.h"
#include "worker/trainer/model/adapter_cast_cache.h"
#include "worker/trainer/parallel/communicator.h"
#include "worker/trainer/runtime/cpu_threads.h"
#include "worker/trainer/runtime/device.h"
#include "worker/trainer/runtime/host_readback.h"
#include "worker/trainer/runtime/out_of_memory.h"
#include "worker/trainer/runtime/phase_timer.h"
#include "worker/trainer/runtime/step_profiler.h"
#include "worker/trainer/runtime/watchdog.h"
#include "worker/trainer/train/batch_prefetcher.h"
#include "worker/trainer/train/fused_adamw.h"
#include "worker/trainer/train/loss_head.h"
#include "worker/trainer/train/lr_schedule.h"
#include "worker/trainer/train/micro_batch_rows.h"
#include "worker/trainer/train/resume_checkpoint.h"
#include "worker/trainer/train/setup.h"
#include "worker/trainer/train/step_graph.h"
#include "worker/trainer/train/validation_eval.h"

namespace qlorad::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// How often a service attempt chooses its resume checkpoint again when the chosen one vanishes.
constexpr int kResumeTries = 3;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// How many rows of a micro-batch one forward takes: all of train.micro_batch_size until a step
// runs out of device memory, then half as many each time it does, for the rest of the run.
struct ForwardSize {
  int64_t rows = 1;
  OomInjection injection;  // QLORAD_INJECT_OOM_ROWS, the test hook
  int64_t seq_len = 0;     // of the rows the last forward took: what did not fit, if they didn't
};

// The forward and backward of one forward's rows, the loss scaled by `scale` (a 0-dim fp64 tensor
// on the device: 1 / the step's valid tokens) before backward. Returns that scaled loss, detached,
// in fp64. Everything it does is queued on the device: it is what a step graph records
// (step_graph.h).
at::Tensor ForwardBackward(Session& s, const ForwardRows& b, const at::Tensor& scale,
                           ForwardSize& forward) {
  // The logits exist one chunk at a time (see chunked_loss.h); the fp32 loss math is unchanged.
  // Rows holding several documents keep them apart (block-diagonal attention, positions
  // restarting per document); others (positions undefined) take the causal path.
  const at::Tensor hidden = s.model->forward(b.inputs, b.positions, b.cu_seqlens);
  forward.injection.MaybeThrow(b.inputs.size(0), hidden.numel() * hidden.element_size());
  const at::Tensor flat = hidden.reshape({-1, hidden.size(-1)});
  // A head LoRA with dropout sees its own dropped copy of the hidden states (LossHeadOf).
  // task: classification's score head takes lm_head's place (classification_head.h).
  const at::Tensor sum =
      s.classifier ? ClassifyRows(*s.classifier, flat, b.labels).loss
                   : ChunkedCrossEntropy(flat, LossHeadOf(s.model, flat), b.labels,
                                         {.ignore_index = kIgnoreLabel}, s.loss_chunk_rows)
                         .sum;
  const at::Tensor loss = sum * scale.to(sum.scalar_type());
  loss.backward();
  return loss.detach().to(at::kDouble);
}

// Forward and backward over this rank's micro-batches of one optimizer step. The loss is the mean
// over every valid token of the step on all ranks (not a mean of per-micro-batch means), so
// grad_accum, the world size and forward.rows change nothing but memory; the divisor is counted on
// the host from the labels as they were drawn (StepBatches), never read back from the device.
// Returns this rank's part of the loss, on the device ([1], fp64), ready for the all-reduce: the
// step reads it back once, after that. A step that is one forward over rows without packed
// documents goes through `graph` (when the job has one), which replays it once recorded.
at::Tensor AccumulateGradients(Session& s, const DeviceStep& batches, ForwardSize& forward,
                               StepGraph* graph) {
  const double scale = 1.0 / static_cast<double>(std::max<int64_t>(batches.global_valid, 1));
  const auto scale_options = at::TensorOptions().dtype(at::kDouble).device(s.device);
  at::Tensor total = at::zeros({1}, scale_options);
  const bool one_forward = batches.micro_batches.size() == 1 &&
                           forward.rows >= batches.micro_batches.front().inputs.size(0) &&
                           !batches.micro_batches.front().positions.defined();
  for (const DeviceMicroBatch& micro_batch : batches.micro_batches) {
    const int64_t rows = micro_batch.inputs.size(0);
    for (int64_t begin = 0; begin < rows; begin += forward.rows) {
      const ForwardRows b = RowsOf(micro_batch, begin, std::min(forward.rows, rows - begin));
      forward.seq_len = b.inputs.size(1);
      if (graph != nullptr && one_forward) {
        total += graph->Run(
            [&](const at::Tensor& inputs, const at::Tensor& labels, const at::Tensor& scale_t) {
              return ForwardBackward(s, {inputs, labels, at::Tensor(), at::Tensor()}, scale_t,
                                     forward);
            },
            b.inputs, b.labels, scale);
      } else {
        total += ForwardBackward(s, b, at::full({}, scale, scale_options), forward);
      }
    }
  }
  return total;
}

// AccumulateGradients, run again with half the rows per forward each time it runs out of device
// memory: the same rows and divisor in more pieces (grad_accum doubled, the global batch kept),
// so the same gradients up to summation order, and the same dropout masks as a run configured
// with the smaller micro-batch, since the retry draws them afresh from the step's seed. Only
// where forward and backward hold no collective (single and ddp; under ddp each rank splits on
// its own and the gradients' all-reduce comes after): an fsdp rank's peers would wait in a gather
// the retry does not repeat in step, so fsdp fails cleanly instead. Failing at one row per forward
// names the length of the rows and what torch said it needed.
StatusOr<at::Tensor> AccumulateWithinMemory(Session& s, const JobSpec& spec, int64_t step,
                                            const DeviceStep& batches, ForwardSize& forward,
                                            StepGraph* graph, EventSink& events) {
  while (true) {
    std::string what;
    try {
      return AccumulateGradients(s, batches, forward, graph);
    } catch (const c10::OutOfMemoryError& e) {
      what = DescribeOutOfMemory(e);
    }
    // The failed attempt's graph and activations went with its stack; its gradients go now (the
    // retry accumulates from zero), and the allocator's cached blocks back to the device.
    s.optimizer->zero_grad();
    ReleaseCachedMemory(s.device);
    const std::string where = "step " + std::to_string(step + 1) + ": out of " +
                              (s.device.is_cpu() ? "memory" : s.device.str() + " memory") +
                              " with micro-batches of " + std::to_string(forward.rows) +
                              " row(s) of " + std::to_string(forward.seq_len) + " tokens (" + what +
                              ")";
    if (s.parallel->sharded()) {
      return FailedPrecondition(
          where + ". Under fsdp a step is not retried with smaller micro-batches (the ranks' " +
          "gathers would no longer match); lower train.micro_batch_size and raise " +
          "train.grad_accum to keep the global batch");
    }
    if (forward.rows == 1) {
      return FailedPrecondition(
          where + ", the smallest micro-batch (data.max_seq_len " +
          std::to_string(spec.data.max_seq_len) + ", train.micro_batch_size " +
          std::to_string(spec.train.micro_batch_size) + " halved down to 1). Lower " +
          "data.max_seq_len, turn on train.activation_checkpointing, or shard the model over " +
          "more GPUs (parallel.strategy fsdp)");
    }
    const int64_t from = forward.rows;
    forward.rows = (from + 1) / 2;
    const int64_t grad_accum =
        spec.train.grad_accum * ((spec.train.micro_batch_size + forward.rows - 1) / forward.rows);
    events.MicroBatchReduced(
        {.step = step + 1,
         .from_rows = from,
         .to_rows = forward.rows,
         .grad_accum = grad_accum,
         .seq_len = forward.seq_len,
         .message = where + "; running it again as micro-batches of " +
                    std::to_string(forward.rows) + " row(s) with grad_accum " +
                    std::to_string(grad_accum) +
                    " (the same global batch), and keeping that for the rest of the job"});
    torch::manual_seed(StepSeed(spec.train.seed, step));
  }
}

// What one optimizer step reports.
struct StepOutcome {
  double loss = 0;
  double grad_norm = 0;
  double lr = 0;
  int64_t tokens = 0;           // of every rank's micro-batches
  bool stop_requested = false;  // on any rank: every rank stops after this step
  DataPosition data_after;      // where the data continues after this step (for checkpoints)
};

// A step queued on the device whose loss, stop request and gradient norm the host has not read.
struct QueuedStep {
  StepOutcome outcome;  // lr, tokens and data_after so far; Read() adds the rest
  HostReadback values;  // [loss, stop request, gradient norm]
  Clock::time_point queued_at;

  StepOutcome Read() {
    const std::vector<double> v = values.Read();
    outcome.loss = v[0];
    outcome.stop_requested = v[1] > 0;
    outcome.grad_norm = v[2];
    return outcome;
  }
};

// One optimizer step (0-based `step`), queued: take the batches (drawn while the previous step
// ran), forward and backward, reduce and clip the gradients, step AdamW, and start copying back
// the numbers the host needs. Nothing here reads from the device or copies to it from pageable
// memory (either would make the host wait for everything queued so far), so the host may queue
// the next step before it reads this one (QueuedStep::Read).
StatusOr<QueuedStep> QueueStep(Session& s, const JobSpec& spec, const TrainOptions& options,
                               int64_t step, BatchPrefetcher& data, ForwardSize& forward,
                               StepGraph* graph, PhaseTimer& phases, EventSink& events) {
  QueuedStep queued;
  queued.queued_at = Clock::now();
  StepOutcome& out = queued.outcome;
  out.lr = LearningRateAt(spec.train, step);
  for (auto& group : s.optimizer->param_groups()) group.options().set_lr(out.lr);

  QLORAD_ASSIGN_OR_RETURN(const DeviceStep batches, data.Next());
  out.tokens = batches.global_tokens;
  out.data_after = batches.after;
  s.optimizer->zero_grad();
  AdapterCastCache::NewStep();
  torch::manual_seed(StepSeed(spec.train.seed, step));  // dropout masks of this step
  phases.End("data");
  QLORAD_ASSIGN_OR_RETURN(const at::Tensor step_loss,
                          AccumulateWithinMemory(s, spec, step, batches, forward, graph, events));
  phases.End("forward+backward");
  QLORAD_RETURN_IF_ERROR(s.parallel->FinishBackward());
  phases.End("gradient reduction");
  // An infinite bound measures the norm without changing the gradients.
  const double max_norm =
      spec.train.max_grad_norm.value_or(std::numeric_limits<double>::infinity());
  QLORAD_ASSIGN_OR_RETURN(const at::Tensor grad_norm_on_device, s.parallel->ClipGradNorm(max_norm));
  phases.End("clip");
  FusedAdamWStep(*s.optimizer);
  phases.End("optimizer");
  // One all-reduce carries the loss and the stop request (ranks see a stop signal at different
  // moments and must stop at the same step), and one copy brings them back with the norm.
  at::Tensor shared =
      at::cat({step_loss, at::full({1}, options.should_stop() ? 1.0 : 0.0, step_loss.options())});
  QLORAD_RETURN_IF_ERROR(s.comm->AllReduceSum(shared)->Wait());
  queued.values = HostReadback(at::cat({shared, grad_norm_on_device.to(shared.device())}));
  phases.End("all-reduce+readback");
  return queued;
}

// The job's step graph (step_graph.h), or null where its steps run eagerly; on a GPU the log says
// which and why.
std::unique_ptr<StepGraph> StepGraphFor(const Session& s, const JobSpec& spec,
                                        const PhaseTimer& phases, const OomInjection& injection,
                                        EventSink& events) {
  if (!s.device.is_cuda()) return nullptr;
  std::string why_not = StepGraphUnsuitable({.world_size = s.comm->world_size(),
                                             .dropout = spec.lora.dropout > 0,
                                             .offload = s.offload,
                                             .classifier = s.classifier.has_value(),
                                             .phase_timing = phases.enabled(),
                                             .injected_oom = injection.active(),
                                             .switch_value = std::getenv("QLORAD_CUDA_GRAPH")});
  std::unique_ptr<GraphRecorder> recorder;
  if (why_not.empty()) recorder = MakeGraphRecorder(s.device);
  if (why_not.empty() && recorder == nullptr) why_not = "this build has no CUDA graphs";
  if (!why_not.empty()) {
    events.Log("info", "CUDA graph: off (" + why_not + ")");
    return nullptr;
  }
  events.Log("info",
             "CUDA graph: on; a step that is one forward over rows without packed documents is "
             "recorded after " +
                 std::to_string(StepGraph::kEagerSteps) +
                 " such steps and replayed from then on (QLORAD_CUDA_GRAPH=0 turns this off)");
  std::vector<at::Tensor> params;
  for (const auto& group : s.optimizer->param_groups()) {
    for (const at::Tensor& p : group.params()) params.push_back(p);
  }
  return std::make_unique<StepGraph>(std::move(recorder), std::move(params));
}

// Says in the job's log, once each, that the step graph was recorded, and that it could not be
// or was let go.
struct StepGraphReports {
  bool recorded = false;
  bool ended = false;
};
void ReportStepGraph(const StepGraph& graph, int64_t step, StepGraphReports& said,
                     EventSink& events) {
  if (!said.recorded && graph.recorded()) {
    events.Log("info", "CUDA graph: recorded at step " + std::to_string(step + 1));
    said.recorded = true;
  }
  if (!said.ended && !graph.failure().empty()) {
    if (graph.dropped()) {
      events.Log("info", "CUDA graph: let go at step " + std::to_string(step + 1) + " (" +
                             graph.failure() + "); the steps from here on run without one");
    } else {
      events.Log("warning", "CUDA graph: recording step " + std::to_string(step + 1) +
                                " failed; every step runs without one (" + graph.failure() + ")");
    }
    said.ended = true;
  }
}

// Whether the host queues step n + 1 before reading step n: meant for a GPU, where the device
// would otherwise idle while the host reads, reports and draws the next step's first kernels
// (about 1.5 ms a step at Llama-3.2-1B shapes in an H100 trace; measured 0.6-1.1 ms). Opt-in with
// QLORAD_PIPELINE_STEPS=1: tests/gpu/test_train_cuda.py passes with it on an H100, but the retry
// after running out of device memory (tests/gpu/test_oom_resilience.py) has not run with it on a
// GPU yet; the CPU tests run the same loop with it on. Never with phase timing, which waits for
// the device after every phase anyway.
bool PipelinesSteps(const PhaseTimer& phases) {
  if (phases.enabled()) return false;
  const char* value = std::getenv("QLORAD_PIPELINE_STEPS");
  return value != nullptr && std::string(value) == "1";
}

// The communicator for this rank: a world of one, or the ranks met at options.rendezvous.
StatusOr<std::shared_ptr<parallel::Communicator>> Connect(const JobSpec& spec,
                                                          const TrainOptions& options,
                                                          at::Device device) {
  if (options.rendezvous.empty()) {
    return std::shared_ptr<parallel::Communicator>(parallel::MakeLocalCommunicator(device));
  }
  const auto collective_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(spec.parallel.timeout_s));
  QLORAD_ASSIGN_OR_RETURN(std::unique_ptr<parallel::Communicator> comm,
                          parallel::Rendezvous({.address = options.rendezvous,
                                                .rank = options.rank,
                                                .world_size = options.world_size,
                                                .device = device,
                                                .collective_timeout = collective_timeout}));
  return std::shared_ptr<parallel::Communicator>(std::move(comm));
}

// --device when given, else resources.device.
StatusOr<at::Device> DeviceFor(const JobSpec& spec, const TrainOptions& options) {
  if (options.device.empty()) return ResolveDevice(spec.resources.device, "resources.device");
  const std::optional<DeviceChoice> flag = ChoiceNamed<DeviceChoice>(options.device);
  if (!flag) {
    return InvalidArgument("--device: must be one of " + ChoiceList<DeviceChoice>() + ", got '" +
                           options.device + "'");
  }
  return ResolveDevice(*flag, "--device");
}

Status CheckOptions(const JobSpec& spec, const TrainOptions& options) {
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
  return Status::Ok();
}

void LogCommunication(const Session& s, int rank, int64_t steps_run, EventSink& events) {
  if (s.comm->world_size() == 1 || steps_run == 0) return;
  const int64_t received = s.comm->bytes_received();
  events.Log("info", "communication: rank " + std::to_string(rank) + " received " +
                         std::to_string(received) + " bytes in collectives over " +
                         std::to_string(steps_run) + " steps (" +
                         std::to_string(received / steps_run) + " bytes per step)");
}

// One run from its first step to its end, once SetUp has built the session: resume, the step
// loop with its events and resume checkpoints, then the adapter.
class TrainingRun {
 public:
  TrainingRun(const JobSpec& spec, const TrainOptions& options, EventSink& events, Session session,
              Clock::time_point started)
      : spec_(spec),
        options_(options),
        events_(events),
        s_(std::move(session)),
        started_(started),
        output_dir_(fs::absolute(spec.checkpoint.output_dir)),
        state_{0, s_.batcher->position(), spec.train.seed} {
    if (s_.validation) tracker_.emplace(spec.train.early_stopping);
    // Only with peers: then a step that outlives parallel.timeout_s already fails their
    // collectives, so the watchdog adds no limit of its own, while a single rank may
    // legitimately take long steps (a large model on a CPU) and has no peer to hold up.
    if (s_.comm->world_size() > 1) {
      watchdog_.emplace(options.rank, spec.parallel.timeout_s, [&events](const std::string& line) {
        events.Error(line, "parallel.timeout_s");
      });
    }
  }

  // --resume: parameters, optimizer state, step and data position from a resume checkpoint.
  Status Resume() {
    if (!options_.resume) return Status::Ok();
    Beat("loading the checkpoint");
    std::string dir;
    for (int tries = 1;; ++tries) {
      if (options_.attempt) {
        // The checkpoint the coordinator names, while it is whole: every rank then agrees on
        // it, and no later checkpoint of a fenced-off attempt is taken. It may be gone (deleted,
        // or pruned by an attempt that still ran): then the newest complete one of the job, as
        // a retry goes on from what is there rather than failing as bad input.
        std::optional<std::string> newest = NewestCheckpoint({*options_.resume});
        if (!newest) newest = NewestCheckpoint({*options_.resume, output_dir_.string()});
        if (!newest) {
          events_.Log("warning", "--resume: no complete checkpoint in " + *options_.resume +
                                     " or under " + output_dir_.string() +
                                     "; starting from step 0");
          return Status::Ok();
        }
        dir = *newest;
      } else {
        QLORAD_ASSIGN_OR_RETURN(dir, ResolveResumeCheckpoint(*options_.resume));
      }
      auto loaded = LoadResumeCheckpoint(dir, *s_.parallel, *s_.optimizer);
      if (loaded.ok()) {
        state_ = *loaded;
        break;
      }
      // Pruned between choosing it and reading it: choose again (a full load overwrites
      // whatever the failed one had set).
      std::error_code ec;
      if (!options_.attempt || tries >= kResumeTries || fs::exists(dir, ec)) {
        return loaded.status();
      }
      events_.Log("warning", dir + " disappeared while it was read; choosing again");
    }
    if (state_.seed != spec_.train.seed) {
      return InvalidArgument("train.seed: the checkpoint " + dir + " was made with seed " +
                             std::to_string(state_.seed) + ", the spec says " +
                             std::to_string(spec_.train.seed));
    }
    s_.batcher->Seek(state_.data);
    if (tracker_) tracker_.emplace(spec_.train.early_stopping, state_.eval);
    events_.Log("info", "resumed from " + dir + " at step " + std::to_string(state_.step));
    return Status::Ok();
  }

  // Runs steps until train.max_steps, or until a stop request (then checkpoints).
  Status Steps() {
    result_.steps = state_.step;
    first_step_ = state_.step;
    s_.model->train();
    if (s_.device.is_cuda()) at::accelerator::resetPeakStats(s_.device.index());
    PhaseTimer phases(s_.device, PhaseTimingRequested());
    StepProfiler profiler(options_.rank, first_step_, s_.device);
    const int64_t total_steps = spec_.train.max_steps;
    // After Resume: the batcher is at the resumed position, and from here on only the
    // prefetcher draws from it.
    BatchPrefetcher data(*s_.batcher,
                         {.micro_batch_size = spec_.train.micro_batch_size,
                          .grad_accum = spec_.train.grad_accum,
                          .rank = options_.rank,
                          .world_size = options_.world_size},
                         s_.device, state_.step, total_steps);
    QLORAD_ASSIGN_OR_RETURN(OomInjection injection, OomInjection::FromEnvironment());
    ForwardSize forward{.rows = spec_.train.micro_batch_size, .injection = injection};
    if (state_.forward_rows > 0 && state_.forward_rows < forward.rows) {
      forward.rows = state_.forward_rows;
      events_.Log("warning", "micro-batches of " + std::to_string(forward.rows) +
                                 " row(s), as the checkpoint's attempt ran after running out of "
                                 "device memory (train.micro_batch_size " +
                                 std::to_string(spec_.train.micro_batch_size) + ")");
    }
    const bool pipelined = PipelinesSteps(phases);
    const std::unique_ptr<StepGraph> graph =
        StepGraphFor(s_, spec_, phases, forward.injection, events_);
    StepGraphReports graph_said;
    const auto queue = [&](int64_t step) -> StatusOr<QueuedStep> {
      Beat("running step " + std::to_string(step + 1) + " of " + std::to_string(total_steps));
      phases.StartStep();
      profiler.BeginStep(step);
      StatusOr<QueuedStep> queued_step =
          QueueStep(s_, spec_, options_, step, data, forward, graph.get(), phases, events_);
      if (graph) ReportStepGraph(*graph, step, graph_said, events_);
      return queued_step;
    };
    std::optional<QueuedStep> queued;  // the step read next
    auto last_read = Clock::now();
    bool stop_pending = false;  // a stop was read while the next step was already queued
    for (int64_t step = state_.step; step < total_steps; ++step) {
      if (!queued) {
        QLORAD_ASSIGN_OR_RETURN(queued, queue(step));
      }
      // The next step goes on the device before this one is read, unless the host has work to do
      // between the two (a checkpoint or an evaluation reads the parameters after this step).
      std::optional<QueuedStep> next;
      if (pipelined && !stop_pending && step + 1 < total_steps && !HostActsAfter(step + 1)) {
        QLORAD_ASSIGN_OR_RETURN(next, queue(step + 1));
      }
      StepOutcome outcome = queued->Read();
      // From the later of its queueing and the previous step's read: the device's time for this
      // step alone when steps are pipelined, and without the previous step's reporting otherwise.
      const auto now = Clock::now();
      const double step_seconds =
          std::chrono::duration<double>(now - std::max(queued->queued_at, last_read)).count();
      last_read = now;
      queued = std::move(next);
      // A stop read while the next step runs is answered after that one, which every rank queued
      // alike (the request was all-reduced): the checkpoint must hold the parameters of a step
      // that was read, and the next step's are already being written.
      if (outcome.stop_requested && queued) {
        stop_pending = true;
        outcome.stop_requested = false;
      } else if (stop_pending) {
        outcome.stop_requested = true;
      }
      state_.step = step + 1;
      state_.data = outcome.data_after;
      state_.forward_rows = forward.rows < spec_.train.micro_batch_size ? forward.rows : 0;
      result_.steps = state_.step;
      result_.losses.push_back(outcome.loss);
      std::optional<ValidationLoss> evaluation;
      // A stop request is answered at once; a diverged step is not worth evaluating.
      if (EvaluatesAfter(outcome)) {
        QLORAD_ASSIGN_OR_RETURN(evaluation, EvaluateNow());
      }
      ReportMetrics(outcome, step_seconds, evaluation);
      const std::optional<double> eval_loss =
          evaluation ? std::optional<double>(evaluation->loss) : std::nullopt;
      if (!std::isfinite(outcome.loss)) {
        // "nan" whatever its sign bit (std::to_string may say "-nan"), as the clients show it.
        const std::string loss = std::isnan(outcome.loss) ? "nan" : std::to_string(outcome.loss);
        return Internal("training diverged: loss is " + loss + " at step " +
                        std::to_string(state_.step) + " (try a lower train.lr or fp32 precision)");
      }
      if (outcome.stop_requested) {
        QLORAD_RETURN_IF_ERROR(SaveCheckpoint());
        result_.stopped = true;
        return Status::Ok();
      }
      if (eval_loss) {
        QLORAD_ASSIGN_OR_RETURN(const bool stop_early, AfterEvaluation(*eval_loss));
        if (stop_early) {
          result_.stopped_early = true;
          break;
        }
      }
      if (CheckpointsAfter(state_.step)) {
        QLORAD_RETURN_IF_ERROR(SaveCheckpoint());
      }
      phases.End("metrics+checkpoint");
      LogTrace(profiler.EndStep(step), "");
    }
    // A run that ended inside the profiled steps.
    LogTrace(profiler.Stop(),
             " (the run ended before the last step QLORAD_PROFILE_STEPS asked for)");
    if (phases.enabled()) events_.Log("info", "phase timing: " + phases.Summary());
    if (graph && graph->recorded()) {
      events_.Log("info", "CUDA graph: " + std::to_string(graph->replays()) + " step(s) replayed");
    }
    return Status::Ok();
  }

  // After the last step: the adapter (rank 0 writes it, receiving one gathered tensor at a time)
  // and the done event. A stopped run ends at its checkpoint instead.
  StatusOr<TrainResult> Finish() {
    if (result_.stopped) return result_;
    LogCommunication(s_, options_.rank, result_.steps - first_step_, events_);
    const std::string adapter_dir = (output_dir_ / "adapter").string();
    Beat("saving the adapter");
    QLORAD_RETURN_IF_ERROR(SaveAdapterFromRanks(*s_.parallel, spec_, adapter_dir));
    result_.adapter_path = adapter_dir;
    if (tracker_ && tracker_->progress().best_step > 0) {
      const EvalProgress& p = tracker_->progress();
      result_.best = events::BestEval{p.best_step, p.best_loss, p.best_checkpoint,
                                      (fs::path(p.best_checkpoint) / "adapter").string()};
    }
    events_.Done({.steps = result_.steps,
                  .adapter_path = adapter_dir,
                  .final_loss = result_.losses.empty() ? 0.0 : result_.losses.back(),
                  .stopped_early = result_.stopped_early,
                  .best = result_.best});
    return result_;
  }

 private:
  void Beat(const std::string& doing) {
    if (watchdog_) watchdog_->Beat(doing, state_.step);
  }

  // Says where StepProfiler wrote its trace (`path`: "" when it wrote none), or that it could
  // not: Kineto fails to write without a word.
  void LogTrace(const std::string& path, const std::string& note) {
    if (path.empty()) return;
    if (fs::exists(path)) {
      events_.Log("info", "Kineto profile written to " + path + note);
    } else {
      events_.Log("warning", "the Kineto profile could not be written to " + path + note);
    }
  }

  // One folder per service attempt (resume_checkpoint.h says why).
  fs::path CheckpointsDir() const {
    const fs::path dir = output_dir_ / "checkpoints";
    return options_.attempt ? dir / ("attempt-" + std::to_string(*options_.attempt)) : dir;
  }

  // Every rank writes its shard (see resume_checkpoint.h); rank 0 announces the checkpoint.
  // state_.data is the position after the last step trained: the batcher is ahead of it.
  Status SaveCheckpoint() {
    Beat("saving the checkpoint of step " + std::to_string(state_.step));
    QLORAD_ASSIGN_OR_RETURN(
        const std::string path,
        SaveResumeCheckpoint(CheckpointsDir().string(), *s_.parallel, *s_.optimizer, spec_, state_,
                             spec_.checkpoint.keep));
    if (options_.rank == 0) events_.Checkpoint(state_.step, path);
    return Status::Ok();
  }

  // After every train.eval_steps-th step and the last one, with data.validation.
  bool EvaluatesAfter(const StepOutcome& outcome) const {
    if (!tracker_ || outcome.stop_requested || !std::isfinite(outcome.loss)) return false;
    return EvaluationDueAfter(state_.step);
  }
  bool EvaluationDueAfter(int64_t steps_done) const {
    return tracker_ &&
           (steps_done % spec_.train.eval_steps == 0 || steps_done == spec_.train.max_steps);
  }
  // After every checkpoint.every_steps-th step but the last (the adapter is saved then).
  bool CheckpointsAfter(int64_t steps_done) const {
    const int64_t every = spec_.checkpoint.every_steps;
    return every > 0 && steps_done % every == 0 && steps_done < spec_.train.max_steps;
  }
  // Whether the host reads the parameters between the step that ends at `steps_done` and the
  // next: the next step may not be queued before.
  bool HostActsAfter(int64_t steps_done) const {
    return CheckpointsAfter(steps_done) || EvaluationDueAfter(steps_done);
  }

  StatusOr<ValidationLoss> EvaluateNow() {
    Beat("evaluating after step " + std::to_string(state_.step));
    QLORAD_ASSIGN_OR_RETURN(const ValidationLoss v,
                            EvaluateValidation(s_, *s_.validation,
                                               {.micro_batch_size = spec_.train.micro_batch_size,
                                                .max_batches = spec_.train.eval_batches,
                                                .rank = options_.rank,
                                                .world_size = options_.world_size}));
    result_.eval_losses.emplace_back(state_.step, v.loss);
    return v;
  }

  // Keep-best and early stopping. Every rank runs this alike (they share the reduced loss), so
  // every rank joins the best checkpoint's collectives and stops at the same step. Returns
  // whether early stopping ends the run here.
  StatusOr<bool> AfterEvaluation(double eval_loss) {
    const EvalTracker::Verdict verdict = tracker_->Record(state_.step, eval_loss);
    if (verdict.new_best) {
      // Its own folder, pruned to one: the rolling `keep` window never deletes it.
      const fs::path best_root = output_dir_ / "best";
      tracker_->SetBestCheckpoint((best_root / ("step-" + std::to_string(state_.step))).string());
      state_.eval = tracker_->progress();
      Beat("saving the best checkpoint, of step " + std::to_string(state_.step));
      QLORAD_ASSIGN_OR_RETURN(const std::string path,
                              SaveResumeCheckpoint(best_root.string(), *s_.parallel, *s_.optimizer,
                                                   spec_, state_, std::numeric_limits<int>::max()));
      if (options_.rank == 0) {
        QLORAD_RETURN_IF_ERROR(RemoveCheckpointsExcept(best_root.string(), path));
        events_.Log("info", "eval loss " + std::to_string(eval_loss) + " at step " +
                                std::to_string(state_.step) + ": the best so far, kept in " + path);
      }
    }
    state_.eval = tracker_->progress();
    // Patience used up at the last step stops nothing: the run ends there anyway.
    if (!verdict.stop || state_.step >= spec_.train.max_steps) return false;
    const EvalProgress& p = tracker_->progress();
    if (options_.rank != 0) return true;
    events_.Log("info", "early stopping at step " + std::to_string(state_.step) + ": " +
                            std::to_string(p.evals_without_improvement) +
                            " evaluations without the eval loss falling more than "
                            "train.early_stopping.min_delta below its best (" +
                            std::to_string(p.best_loss) + " at step " +
                            std::to_string(p.best_step) + ")");
    return true;
  }

  void ReportMetrics(const StepOutcome& outcome, double step_seconds,
                     const std::optional<ValidationLoss>& evaluation) {
    events::Metrics m;
    m.step = state_.step;
    m.total_steps = spec_.train.max_steps;
    m.loss = outcome.loss;
    m.lr = outcome.lr;
    m.grad_norm = outcome.grad_norm;
    m.tokens_per_s = static_cast<double>(outcome.tokens) / std::max(step_seconds, 1e-9);
    FillVram(s_.device, &m);
    m.wall_time_s = SecondsSince(started_);
    m.rank = options_.rank;
    if (evaluation) {
      m.eval_loss = evaluation->loss;
      m.eval_accuracy = evaluation->accuracy;
    }
    events_.Metrics(m);
  }

  const JobSpec& spec_;
  const TrainOptions& options_;
  EventSink& events_;
  Session s_;
  const Clock::time_point started_;
  const fs::path output_dir_;
  ResumeState state_;
  std::optional<Watchdog> watchdog_;  // after s_: it is started once the model has loaded
  TrainResult result_;
  int64_t first_step_ = 0;
  std::optional<EvalTracker> tracker_;  // with data.validation
};

}  // namespace

StatusOr<TrainResult> Train(const JobSpec& given, const TrainOptions& options, EventSink& events) {
  // task: classification numbers its labels once, before anything reads the spec.
  QLORAD_ASSIGN_OR_RETURN(const JobSpec spec, WithClassLabels(given));
  QLORAD_RETURN_IF_ERROR(CheckOptions(spec, options));
  const auto started = Clock::now();
  QLORAD_ASSIGN_OR_RETURN(const at::Device device, DeviceFor(spec, options));
  QLORAD_ASSIGN_OR_RETURN(const std::optional<double> fraction, LimitMemoryFromEnvironment(device));
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {  // else torch took it
    at::set_num_threads(CpuThreadsPerRank(device.is_cpu(), HostCpus(), LocalRanks()));
  }
  // Announced before loading: the agent learns the process is alive while a large model loads.
  events.Started(spec.train.max_steps, device.str(), options.rank, options.world_size);
  if (fraction) {
    events.Log("info", "the caching allocator may hold " + std::to_string(*fraction) + " of " +
                           device.str() + "'s memory (QLORAD_CUDA_MEMORY_FRACTION)");
  }
  // Before loading: a missing peer fails the job now, not after a multi-GB load.
  QLORAD_ASSIGN_OR_RETURN(std::shared_ptr<parallel::Communicator> comm,
                          Connect(spec, options, device));
  QLORAD_ASSIGN_OR_RETURN(Session session, SetUp(spec, device, std::move(comm), events));
  TrainingRun run(spec, options, events, std::move(session), started);
  QLORAD_RETURN_IF_ERROR(run.Resume());
  QLORAD_RETURN_IF_ERROR(run.Steps());
  return run.Finish();
}

}  // namespace qlorad::trainer
