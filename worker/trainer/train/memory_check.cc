#include "worker/trainer/train/memory_check.h"

#include <string>

#include "common/host_memory.h"

namespace qlorad::trainer {

ModelShape ShapeOf(const LlamaConfig& config) {
  return {.hidden_size = config.hidden_size,
          .intermediate_size = config.intermediate_size,
          .num_hidden_layers = config.num_hidden_layers,
          .num_attention_heads = config.num_attention_heads,
          .num_key_value_heads = config.num_key_value_heads,
          .head_dim = config.head_dim,
          .vocab_size = config.vocab_size,
          .tie_word_embeddings = config.tie_word_embeddings};
}

MemoryJob MemoryJobOfRun(const JobSpec& spec, const LlamaConfig& config, int world_size,
                         parallel::Strategy strategy) {
  MemoryJob job = MemoryJobOf(spec, ShapeOf(config));
  job.world_size = world_size;
  switch (strategy) {
    case parallel::Strategy::kSingle:
      job.sharding = MemorySharding::kSingle;
      break;
    case parallel::Strategy::kDdp:
      job.sharding = MemorySharding::kDdp;
      break;
    case parallel::Strategy::kFsdp:
      job.sharding = MemorySharding::kFsdp;
      break;
  }
  return job;
}

Status CheckMemory(const JobSpec& spec, const MemoryJob& job, std::optional<int64_t> free_bytes,
                   EventSink& events) {
  if (!free_bytes) return Status::Ok();
  const MemoryEstimate e = EstimateMemory(job);
  events.Log("info", "memory estimate: " + FormatMemory(e.peak) + " at the peak (" + e.phase +
                         "), " + FormatMemory(UsableBytes(*free_bytes)) + " usable of " +
                         FormatMemory(*free_bytes) + " free on the device");
  if (e.peak <= UsableBytes(*free_bytes)) return Status::Ok();
  const std::string field =
      LargestFittingSeqLen(job, *free_bytes) > 0 ? "data.max_seq_len" : "model.path";
  const std::string message = DoesNotFitMessage(job, *free_bytes);
  if (spec.resources.ignore_memory_estimate) {
    events.Log("warning", "running anyway (resources.ignore_memory_estimate): " + message);
    return Status::Ok();
  }
  return InvalidArgument(field + ": " + message);
}

Status CheckHostMemory(const JobSpec& spec, const MemoryJob& job, bool on_gpu,
                       std::optional<int64_t> host_available_bytes, EventSink& events) {
  const int64_t pinned = OffloadHostBytes(job);
  if (!on_gpu || pinned == 0 || !host_available_bytes) return Status::Ok();
  const int64_t available = *host_available_bytes;
  const int64_t usable = UsableHostBytes(available);
  const std::string what =
      "activation offload pins " + FormatMemory(pinned) + " of host memory (the inputs of " +
      std::to_string(job.model.num_hidden_layers) + " decoder layers at " +
      std::to_string(job.micro_batch_size) + " x " + std::to_string(job.seq_len) + " tokens" +
      (job.keep_attention ? ", with their attention outputs" : "") +
      (job.keep_mlp ? ", with their MLPs' gate|up" : "") + ")";
  const std::string host =
      FormatMemory(usable) + " usable of " + FormatMemory(available) + " available on the host";
  events.Log("info", what + ", " + host);
  if (pinned <= usable) return Status::Ok();
  const int64_t longest = LargestOffloadSeqLen(job, available);
  std::string message = what + ", more than the " + host;
  message += longest > 0 ? "; the longest context whose inputs fit is " + std::to_string(longest) +
                               " tokens (data.max_seq_len)"
                         : "; not even 1024 tokens' inputs fit";
  message += ", or set train.activation_offload: false where the GPU has room for them";
  // The margin may be waived, the host's memory may not: pinned pages cannot be swapped, and past
  // them the kernel's out-of-memory killer picks a process (maybe the worker beside the trainer).
  if (spec.resources.ignore_memory_estimate && pinned <= available) {
    events.Log("warning", "running anyway (resources.ignore_memory_estimate): " + message);
    return Status::Ok();
  }
  return InvalidArgument("data.max_seq_len: " + message);
}

}  // namespace qlorad::trainer
