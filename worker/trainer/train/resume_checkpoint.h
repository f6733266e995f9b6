// Resumable checkpoints: <output_dir>/checkpoints/step-N/ holds the adapter (PEFT format, for
// people and tools), the LoRA values and AdamW state as the ranks held them (manifest.json and
// shard files, see checkpoint_shards.h) and state.json (step, data position, seed, evaluation
// progress). Any strategy
// and world size resumes from any other. Every rank writes into a temporary directory that rank 0
// renames into place once all have finished, so a crash mid-write never leaves a half-written
// step-N that a resume would pick up. The ranks must share the file system (one host under
// `qlorad-train launch`).
//
// Under the service each attempt of a job writes to and prunes only its own folder,
// <output_dir>/checkpoints/attempt-A/step-N: an earlier attempt that still runs (its worker was
// cut off) cannot delete the checkpoints of the attempt that replaced it.
//
// RNG: dropout is reseeded at every step from (train.seed, step), and LoRA init happens before
// any checkpoint, so the step number is the whole RNG state and a resumed run draws the same
// masks as an uninterrupted one.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/data/batcher.h"
#include "worker/trainer/parallel/parallelize.h"
#include "worker/trainer/train/eval_tracker.h"

namespace qlorad::trainer {

struct ResumeState {
  int64_t step = 0;  // optimizer steps completed
  DataPosition data;
  uint64_t seed = 0;
  // With data.validation: the best evaluation and early stopping's count, so a resumed run
  // neither forgets the best nor restarts its patience.
  EvalProgress eval = {};
  // Rows per forward after running out of device memory (trainer.cc halves the micro-batch and
  // keeps the smaller size); 0: train.micro_batch_size. A resumed attempt starts from it rather
  // than running out of memory again to find it.
  int64_t forward_rows = 0;
};

// Every rank calls this. Writes step-<state.step> under `checkpoints_dir` and returns its absolute
// path, then (rank 0) deletes all but the newest `keep` checkpoints.
StatusOr<std::string> SaveResumeCheckpoint(const std::string& checkpoints_dir,
                                           parallel::DataParallel& parallel,
                                           torch::optim::Optimizer& optimizer, const JobSpec& spec,
                                           const ResumeState& state, int keep);

// Rank 0: deletes every step-N checkpoint under `checkpoints_dir` except `kept`. Keep-best prunes
// this way rather than by age: after a restart the best may be an earlier step than one a
// failed attempt left behind.
Status RemoveCheckpointsExcept(const std::string& checkpoints_dir, const std::string& kept);

// Every rank calls this: the LoRA tensors are gathered one at a time and rank 0 writes them to
// `dir` as a PEFT adapter.
Status SaveAdapterFromRanks(parallel::DataParallel& parallel, const JobSpec& spec,
                            const std::string& dir);

// `dir` may be a step-N directory, a checkpoints/ directory (or an attempt-A folder in one), or
// an output_dir that has one; the newest complete step-N is chosen. NotFound when there is none.
StatusOr<std::string> ResolveResumeCheckpoint(const std::string& dir);

// The newest complete step-N (one with its state.json) found as ResolveResumeCheckpoint looks
// under any of `dirs`; missing directories are skipped. nullopt when there is none.
std::optional<std::string> NewestCheckpoint(const std::vector<std::string>& dirs);

// Restores this rank's LoRA values and optimizer state into an already parallelized model and
// its optimizer, whatever strategy and world size wrote the checkpoint.
StatusOr<ResumeState> LoadResumeCheckpoint(const std::string& checkpoint_dir,
                                           const parallel::DataParallel& parallel,
                                           torch::optim::Optimizer& optimizer);

// Seed for the dropout generator of optimizer step `step`.
uint64_t StepSeed(uint64_t seed, int64_t step);

}  // namespace qlorad::trainer
