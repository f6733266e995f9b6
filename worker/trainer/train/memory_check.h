// The job's GPU memory estimate (common/memory_estimate.h) against what the device has free,
// before the model is loaded: a job that will not fit is refused at once, with the largest
// context that would fit and the options that would make the asked one fit, rather than failing
// with an out-of-memory error minutes into loading or mid-step.
#pragma once

#include <cstdint>
#include <optional>

#include "common/jobspec.h"
#include "common/memory_estimate.h"
#include "common/status.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/parallel/parallelize.h"
#include "worker/trainer/runtime/event_sink.h"

namespace qlorad::trainer {

// The sizes the estimate needs, from the trainer's own (validated) config.
ModelShape ShapeOf(const LlamaConfig& config);

// The spec's MemoryJob at this run's world size and strategy (auto choices as MemoryJobOf takes
// them; PlanActivations resolves them).
MemoryJob MemoryJobOfRun(const JobSpec& spec, const LlamaConfig& config, int world_size,
                         parallel::Strategy strategy);

// Logs the estimate and, when it exceeds 90% of free_bytes, refuses the job: INVALID_ARGUMENT
// "data.max_seq_len: <DoesNotFitMessage>" (or "model.path: ..." when not even 1024 tokens fit).
// With resources.ignore_memory_estimate the refusal is a warning. free_bytes nullopt (a CPU): no
// check.
Status CheckMemory(const JobSpec& spec, const MemoryJob& job, std::optional<int64_t> free_bytes,
                   EventSink& events);

// With activation offload on a GPU: the inputs it will pin in host memory (OffloadHostBytes)
// against what the host can still give (host_available_bytes, from HostAvailableBytes). Logs
// both and, past 90% of it, refuses the job: INVALID_ARGUMENT "data.max_seq_len: ..." with the
// longest context whose inputs fit, rather than have the kernel's out-of-memory killer end the
// trainer mid-forward without a word. resources.ignore_memory_estimate turns the refusal into a
// warning only while the inputs fit in what is available (it waives the margin, not the memory).
// No check without offload, on a CPU, or when the host's memory is unknown (nullopt).
Status CheckHostMemory(const JobSpec& spec, const MemoryJob& job, bool on_gpu,
                       std::optional<int64_t> host_available_bytes, EventSink& events);

}  // namespace qlorad::trainer
