// The GPU memory a training job will need at its peak, predicted before anything is loaded from the
// model's shape, the job's batch and context, and its options. Torch-free and pure, so that the
// trainer (which refuses a job that will not fit, and decides train.activation_checkpointing and
// activation_offload `auto` with it) and the coordinator (which places a job only on a worker
// whose GPU has room for it) compute the same number.
//
// What it predicts is the caching allocator's peak of allocated bytes, torch's
// max_memory_allocated, which is what the trainer reports as vram_peak_bytes and bench/e2e
// measures. The CUDA context and the allocator's slack come on top; the fit rules below add them.
// Calibration against measured peaks (H100, Llama-3.2-1B and Llama-3.1-8B shapes): the table in
// common/README.md. The model follows the trainer's CUDA fast path (fused projections, flash
// attention, ChunkedMlp in the recompute, the fused online cross-entropy); other paths (CPU,
// QLORAD_FUSED=0, fp32 LoRA compute) use more and are estimated less closely.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/jobspec.h"
#include "common/model_shape.h"

namespace qlorad {

enum class MemorySharding { kSingle, kDdp, kFsdp };

// Rows per chunk of the checkpointed MLP over `tokens` rows (worker/trainer/model/chunked_mlp.h),
// the one rule the trainer runs and the estimate counts. At most `max_rows` rows
// (MlpChunkMaxRows()) and 256 MiB of a chunk's gate|up output [rows, 2 x intermediate] (at least
// 1024 rows) give the number of chunks; the rows are then shared evenly among them and rounded up
// to a multiple of 128, the GEMMs' tile height (a chunk of 4681 rows would run 37 row tiles, the
// last one 57% full).
int64_t MlpChunkRows(int64_t intermediate, int64_t activation_bytes, int64_t tokens,
                     int64_t max_rows);
// 4096, or QLORAD_MLP_CHUNK_ROWS (read once; for side-by-side timings of the trade between a
// checkpointed layer's backward peak and the size of its GEMMs). At Llama-3.2-1B 4 x 2048,
// chunks of 2048 rows took the peak from 2.82 to 2.27 GiB against one chunk of 8192, for 2% of the
// step (bench/results/2026-12-07-h100-9fca4e2-*); 4096 rows lie between.
int64_t MlpChunkMaxRows();

// Everything that decides a rank's memory, every choice resolved (no auto).
struct MemoryJob {
  ModelShape model;
  int64_t micro_batch_size = 1;
  int64_t seq_len = 2048;
  int64_t activation_bytes = 2;    // train.precision: 2 (bf16, fp16) or 4 (fp32)
  int64_t lora_compute_bytes = 2;  // lora.compute_precision
  bool nf4 = true;                 // quantization.type
  int64_t block_size = 64;
  bool double_quant = true;
  int64_t lora_r = 16;
  std::vector<std::string> lora_targets = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                           "gate_proj", "up_proj", "down_proj"};
  bool checkpointing = true;  // train.activation_checkpointing
  bool offload = false;       // train.activation_offload
  // With checkpointing, each layer also keeps attention's output and log-sum-exp for its
  // recompute (in host memory with offload), which then skips attention's forward
  // (ResolveKeepAttention).
  bool keep_attention = false;
  // With checkpointing, each layer's MLP also keeps its gate|up output for its backward, which
  // then skips the gate|up GEMM (ResolveKeepMlp).
  bool keep_mlp = false;
  int64_t mlp_chunk_max_rows = MlpChunkMaxRows();  // MlpChunkRows's most
  int64_t world_size = 1;
  MemorySharding sharding = MemorySharding::kSingle;
  bool reshard_after_forward = true;
  bool cpu_offload = false;  // parallel.cpu_offload (fsdp)
};

// The peak, in bytes, as the sum of what is allocated at that moment. Each term is commented in
// memory_estimate.cc with the tensors it counts.
struct MemoryEstimate {
  int64_t frozen_weights = 0;     // embedding, head, norms, the (NF4) projections this rank holds
  int64_t lora_state = 0;         // fp32 LoRA parameters, AdamW moments, gradients at the peak
  int64_t kept_activations = 0;   // what forward keeps for backward, at the peak
  int64_t layer_working_set = 0;  // one decoder layer's backward (with its recompute)
  int64_t loss = 0;               // the loss head's tensors, when the peak is at the loss
  int64_t workspace = 0;          // cuBLAS workspace and the step's token batch
  int64_t peak = 0;               // the sum of the above
  std::string phase;              // where in the step the peak falls, for people
  int64_t lora_parameters = 0;    // trainable parameters (all ranks together)
};

MemoryEstimate EstimateMemory(const MemoryJob& job);

// The spec's job for `model`, with train.activation_checkpointing and activation_offload as the
// spec says and `auto` taken as on (the leanest the spec allows; ResolveActivations decides auto
// against a device).
MemoryJob MemoryJobOf(const JobSpec& spec, const ModelShape& model);

// How much of a GPU a job may plan to use: 90% of what is free once the process has its CUDA
// context, the rest left to the caching allocator's fragmentation (the rule
// train.activation_checkpointing auto has always used).
int64_t UsableBytes(int64_t free_bytes);
// The CUDA context (driver state, loaded kernels) that torch's allocator does not count; about
// 0.5 GiB on an H100 with CUDA 13 and lazy module loading. A worker's total GPU memory pays it
// before any tensor exists; a trainer asking the device after its context exists does not.
inline constexpr int64_t kCudaContextBytes = int64_t{512} << 20;
// Total GPU memory a job of this peak needs on an idle device: context + peak / 0.9.
int64_t DeviceBytesNeeded(int64_t peak);
bool Fits(const MemoryJob& job, int64_t free_bytes);

// train.activation_checkpointing and activation_offload decided for a device with `free_bytes`
// free (nullopt: a CPU, where auto means off). Checkpointing auto: off when the step fits without
// it. Offload auto: on when checkpointing is on and the step does not fit with the kept inputs on
// the device. activation_offload true turns checkpointing on.
struct ActivationChoices {
  bool checkpointing = false;
  bool offload = false;
  std::string checkpointing_why;  // for the job's log
  std::string offload_why;
};
ActivationChoices ResolveActivations(const JobSpec& spec, MemoryJob job,
                                     std::optional<int64_t> free_bytes);

// Whether a job with checkpointing and offload on keeps each layer's attention output and
// log-sum-exp for its recompute (worker/trainer/model/recompute_keep.h): on when the step still
// fits in `free_bytes` and the host's `host_available_bytes` has room for those beside the inputs
// (either nullopt: not known, so no room is assumed). It trades host memory for one attention
// forward a layer; never on a CPU, whose attention recomputes.
struct KeepChoice {
  bool on = false;
  std::string why;  // for the job's log
};
KeepChoice ResolveKeepAttention(MemoryJob job, std::optional<int64_t> free_bytes,
                                std::optional<int64_t> host_available_bytes);
// The same rule for the MLP's gate|up output ([tokens, 2 x intermediate] a layer), beside whatever
// `job` keeps already: it trades host memory and PCIe traffic for one gate|up GEMM a layer.
KeepChoice ResolveKeepMlp(MemoryJob job, std::optional<int64_t> free_bytes,
                          std::optional<int64_t> host_available_bytes);

// The largest seq_len, a multiple of 1024, with which the job fits in `free_bytes`; 0 if not
// even 1024 does.
int64_t LargestFittingSeqLen(MemoryJob job, int64_t free_bytes);

// Changes of the spec's options that make the job fit as asked, each with its estimated peak,
// e.g. "train.activation_offload: true (about 13.1 GiB)". Empty when none does.
std::vector<std::string> ChangesThatFit(const MemoryJob& job, int64_t free_bytes);

// The refusal: the estimate and its terms, the free memory, the largest context that fits and
// the changes that would make the asked one fit, and how to run anyway.
std::string DoesNotFitMessage(const MemoryJob& job, int64_t free_bytes);

// The page-locked host memory activation offload holds at its peak, after forward: every decoder
// layer's input [micro_batch, seq, hidden] (parallel/activation_offload.h), with keep_attention its
// attention output and log-sum-exp too, with keep_mlp its gate|up output, plus up to 1 MiB each
// that the host allocator rounds up.
// 0 without offload.
int64_t OffloadHostBytes(const MemoryJob& job);
// How much of the host's available memory offload may plan to pin: 90%, the rest left to the
// process itself (its heap, the dataset, the model's files while they load).
int64_t UsableHostBytes(int64_t available_bytes);
// The largest seq_len, a multiple of 1024, whose offloaded inputs fit in `available_bytes` of
// host memory; 0 if not even 1024 does.
int64_t LargestOffloadSeqLen(const MemoryJob& job, int64_t available_bytes);

// "23.4 GiB", or "310 MiB" below 1 GiB (where tenths of a GiB say too little).
std::string FormatMemory(int64_t bytes);

}  // namespace qlorad
