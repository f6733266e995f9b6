// Everything a training run sets up before its first step, in one order (SetUp):
//   1. the dataset and its batches (first: a bad dataset line should not wait for a model load),
//      and the validation set's (data.validation: its own file, or split off the training file);
//   2. the model, loaded onto the device (quantized as it loads; under fsdp each rank keeps only
//      its shard of the decoder, parallel/shard_on_load.h);
//   3. parallel::Parallelize: quantize what is left, LoRA, lora.init_from, activation recompute,
//      replicate or shard (parallel/parallelize.h owns that order);
//   4. the optimizer over what this rank trains (and task: classification's score head).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/data/batcher.h"
#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/parallel/communicator.h"
#include "worker/trainer/parallel/parallelize.h"
#include "worker/trainer/runtime/event_sink.h"
#include "worker/trainer/train/classification_head.h"

namespace qlorad::trainer {

// Everything a run holds between steps.
struct Session {
  LlamaModel model{nullptr};
  std::optional<Batcher> batcher;
  std::optional<Batcher> validation;  // with data.validation: its rows in file order
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::shared_ptr<parallel::Communicator> comm;
  std::unique_ptr<parallel::DataParallel> parallel;  // after model: it hooks the model's layers
  at::Device device{at::kCPU};
  // task: classification: the score head, trained with the adapters (the loss reads it instead
  // of lm_head).
  std::optional<ClassificationHead> classifier;
  // Tokens per lm_head + loss chunk (train.loss_chunk_size); 0: auto, each loss path its own size.
  int64_t loss_chunk_rows = 0;
  // Whether checkpointed decoder layers keep their inputs in host memory until backward
  // (train.activation_offload, auto resolved).
  bool offload = false;
};

// Logs each step's outcome to `events`; errors name the spec field or the file.
StatusOr<Session> SetUp(const JobSpec& spec, at::Device device,
                        std::shared_ptr<parallel::Communicator> comm, EventSink& events);

}  // namespace qlorad::trainer
