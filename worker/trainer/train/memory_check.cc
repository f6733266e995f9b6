#include "worker/trainer/train/memory_check.h"

#include <string>

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

}  // namespace qlorad::trainer
