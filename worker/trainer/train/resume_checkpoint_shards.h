// The trainable state of a checkpoint (LoRA values and their AdamW moments), saved as the ranks
// held it and restorable at any world size and strategy.
//
//   manifest.json                       rank 0: the shard count and, per LoRA tensor, its module,
//                                       A or B, full shape and split (unit, rows_per_rank)
//   shard-<i>-of-<n>.safetensors        the holder of shard i: for each tensor "<module>.lora_A"
//                                       or ".lora_B", fp32 "<key>.value", "<key>.exp_avg",
//                                       "<key>.exp_avg_sq" (this shard's flat rows, padding
//                                       included) and int64 "<key>.step"
//
// fsdp writes one shard per rank; single and ddp write one shard (rank 0) holding whole tensors.
// Loading reads every shard of a tensor, reassembles it, and cuts this rank's part under the
// current layout, so a checkpoint of N fsdp ranks resumes on M fsdp ranks, under ddp or on one
// rank, with the optimizer state of an uninterrupted run.
#pragma once

#include <torch/torch.h>

#include <string>

#include "common/status.h"
#include "worker/trainer/parallel/parallelize.h"

namespace qlorad::trainer {

// Every rank calls this; the ranks holding a distinct shard write theirs into `dir`, and rank 0
// writes the manifest.
Status SaveParameterShards(const std::string& dir, const parallel::DataParallel& parallel,
                           torch::optim::Optimizer& optimizer);

// Restores this rank's parameters and AdamW state from the shards in `dir`. Missing or damaged
// files and tensors that do not match the model are errors naming the file and the tensor.
Status LoadParameterShards(const std::string& dir, const parallel::DataParallel& parallel,
                           torch::optim::Optimizer& optimizer);

}  // namespace qlorad::trainer
