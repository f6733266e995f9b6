// Resumable checkpoints: <output_dir>/checkpoints/step-N/ holds the adapter (PEFT format), the
// AdamW state (torch::save), and state.json (step, data position, seed). A checkpoint is written
// to a temporary directory and renamed into place, so a crash mid-write never leaves a
// half-written step-N that a resume would pick up.
//
// RNG: dropout is reseeded at every step from (train.seed, step), and LoRA init happens before
// any checkpoint, so the step number is the whole RNG state and a resumed run draws the same
// masks as an uninterrupted one.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/batcher.h"
#include "worker/trainer/llama_model.h"

namespace qlorad::trainer {

struct CheckpointState {
  int64_t step = 0;  // optimizer steps completed
  DataPosition data;
  uint64_t seed = 0;
};

// Writes step-<state.step> under `checkpoints_dir` and returns its absolute path, then deletes
// all but the newest `keep` checkpoints.
StatusOr<std::string> SaveCheckpoint(const std::string& checkpoints_dir, const LlamaModel& model,
                                     torch::optim::Optimizer& optimizer, const JobSpec& spec,
                                     const CheckpointState& state, int keep);

// `dir` may be a step-N directory, a checkpoints/ directory, or an output_dir that has one; the
// newest step-N is chosen. NotFound when there is none.
StatusOr<std::string> ResolveCheckpoint(const std::string& dir);

// Restores the adapter and optimizer state into an already built model and optimizer.
StatusOr<CheckpointState> LoadCheckpoint(const std::string& checkpoint_dir, LlamaModel& model,
                                         torch::optim::Optimizer& optimizer);

// Seed for the dropout generator of optimizer step `step`.
uint64_t StepSeed(uint64_t seed, int64_t step);

}  // namespace qlorad::trainer
