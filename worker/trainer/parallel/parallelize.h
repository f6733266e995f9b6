// Turns a loaded Llama into the model a rank trains. The model holds no parallelism code:
// Parallelize() is the one place that applies, in this order (each step says why it comes there):
//   1. quantize the frozen projections to NF4 and attach LoRA (model/qlora.h);
//   2. load lora.init_from into the adapters;
//   3. data parallelism: replicate or shard (fsdp.h), with fsdp's CPU offload.
// Activation recompute is the trainer's setup's, once it has measured the parallelized model
// (train/checkpointing_choice.h); it wraps whole decoder layers whatever holds their weights.
// and so decides what is replicated, what is sharded, and when gradients cross ranks.
//
//   single  one rank; the model's own parameters.
//   ddp     every rank holds the whole model; LoRA gradients are all-reduced (summed) once per
//           optimizer step, before clipping.
//   fsdp    each decoder layer's frozen weights (NF4 packed bytes + absmax, or dense rows) and
//           LoRA weights are dim-0 shards (see shard.h); a layer gathers them when it runs and
//           reduce-scatters its LoRA gradients in backward (see fsdp.h). Embedding, final norm and
//           lm_head stay replicated.
//
// The loss is normalized by the global count of valid tokens, so gradients are summed, never
// averaged, across ranks.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/jobspec.h"
#include "common/status.h"
#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/model/qlora.h"
#include "worker/trainer/parallel/communicator.h"
#include "worker/trainer/parallel/shard.h"

namespace qlorad::trainer::parallel {

enum class Strategy { kSingle, kDdp, kFsdp };

// parallel.strategy: auto is fsdp when world_size > 1, else single; single needs world size 1.
StatusOr<Strategy> ResolveStrategy(const ParallelSpec& spec, int world_size);
const char* StrategyName(Strategy strategy);

// Degrees of data parallelism; replicate x shard is the world size.
struct ParallelDims {
  int replicate = 1;  // ddp degree
  int shard = 1;      // fsdp degree

  // Checks that both degrees are at least 1 and multiply to `world_size`.
  static StatusOr<ParallelDims> Create(int replicate, int shard, int world_size);
  // The degrees `strategy` asks for on `world_size` ranks: single 1 x 1, ddp W x 1, fsdp 1 x W.
  static StatusOr<ParallelDims> For(Strategy strategy, int world_size);
  int world_size() const { return replicate * shard; }
};

// What one optimizer parameter is: a LoRA tensor of a projection, or this rank's dim-0 shard of
// one. The parameter, flattened, is shard shard_index() of `spec` (padding included); replicated
// parameters are the one shard of a split into one. Checkpoints use this to save and restore
// parameters and optimizer state at any world size without knowing the strategy.
struct ParameterLayout {
  std::string module;  // "model.layers.0.self_attn.q_proj"
  bool lora_a = true;  // else lora_B
  ShardSpec spec;      // of the whole tensor, as split on this run's ranks
  bool whole = false;  // the module's weight, trained whole (DataParallel::AddWholeParameter)
};

// What the training loop asks of a parallelized model.
class DataParallel {
 public:
  virtual ~DataParallel() = default;

  // What this rank's optimizer steps (local shards under fsdp).
  virtual std::vector<at::Tensor> Parameters() const = 0;
  // After the last backward of an optimizer step: gradients are then final on every rank.
  virtual Status FinishBackward() = 0;
  // Clips by the norm over every rank's gradients, as one process would (torch's
  // clip_grad_norm_ coefficient; an infinite max_norm only measures); returns that norm, [1] fp64
  // on the collective device, without waiting for it (unless the gradients live elsewhere).
  StatusOr<at::Tensor> ClipGradNorm(double max_norm);
  // The weight of `module` (e.g. "score": task classification's head), trained whole beside the
  // adapters and replicated under every strategy (it is small, and fsdp's units are decoder
  // layers): FinishBackward sums its gradient across ranks (with the LoRA gradients under ddp,
  // in one all-reduce of its own under fsdp), ClipGradNorm counts it once, and it is saved in the
  // adapter (PEFT's modules_to_save) and in resume checkpoints (cut like a LoRA tensor there, so
  // a checkpoint's shards split every tensor alike).
  void AddWholeParameter(const std::string& module, const at::Tensor& weight) {
    whole_.emplace_back(module, weight);
  }
  const std::vector<std::pair<std::string, at::Tensor>>& WholeParameters() const { return whole_; }
  // Parameters() and ParameterLayouts(), then the whole parameters: what checkpoints hold.
  std::vector<at::Tensor> AllParameters() const;
  std::vector<ParameterLayout> AllParameterLayouts() const;
  // Hands each full LoRA tensor, one at a time, to `write` on rank 0 (every rank must call this:
  // under fsdp each tensor is gathered).
  using TensorWriter =
      std::function<Status(const std::string& module_name, bool lora_a, const at::Tensor& value)>;
  virtual Status ForEachAdapterTensor(const TensorWriter& write) = 0;
  // One entry per Parameters() element, in the same order.
  virtual std::vector<ParameterLayout> ParameterLayouts() const = 0;
  // Which shard of every parameter this rank holds, out of how many (replicated: 0 of 1).
  int shard_index() const { return sharded_ ? comm_->rank() : 0; }
  int shard_count() const { return sharded_ ? comm_->world_size() : 1; }

  Communicator& comm() const { return *comm_; }
  // Parameters and optimizer state differ per rank (fsdp).
  bool sharded() const { return sharded_; }

 protected:
  // `collective_device`: where tensors must be for comm() (the model's device; sharded state may
  // live elsewhere, as with fsdp's CPU offload).
  DataParallel(std::shared_ptr<Communicator> comm, bool sharded, at::Device collective_device)
      : comm_(std::move(comm)), sharded_(sharded), collective_device_(collective_device) {}
  // Sums the gradients of `params`, which every rank holds whole, across ranks in one
  // all-reduce; a parameter this rank left without a gradient counts as zeros.
  Status SumGradientsAcrossRanks(const std::vector<at::Tensor>& params);
  // The whole parameters' tensors (AddWholeParameter), in order.
  std::vector<at::Tensor> WholeTensors() const;

 private:
  std::shared_ptr<Communicator> comm_;
  bool sharded_;  // parameters differ per rank, so the norm needs an all-reduce
  std::vector<std::pair<std::string, at::Tensor>> whole_;
  at::Device collective_device_;
};

// What Parallelize applies, from the job spec.
struct ParallelizeOptions {
  Strategy strategy = Strategy::kSingle;
  // What is left to quantize: type none for a model that loaded quantized.
  QuantizationSpec quantization;
  LoraSpec lora;
  uint64_t seed = 0;                       // train.seed: LoRA A's draws
  at::ScalarType lora_dtype = at::kFloat;  // lora.compute_precision
  ParallelSpec parallel;
};

struct Parallelized {
  std::unique_ptr<DataParallel> data_parallel;
  QLoraSummary qlora;  // what step 1 did
};

// `pre_cut`: with fsdp, this rank's frozen shards as a sharded load cut them (shard_on_load.h);
// the projections named there hold placeholders. Errors name the spec field.
StatusOr<Parallelized> Parallelize(LlamaModel& model, const ParallelizeOptions& options,
                                   std::shared_ptr<Communicator> comm, FrozenShards pre_cut = {});

// Step 4 alone, for a model whose LoRA is already attached: projections not in `pre_cut` are cut
// here (fsdp) from the weights they hold.
StatusOr<std::unique_ptr<DataParallel>> ApplyDataParallel(LlamaModel& model, Strategy strategy,
                                                          const ParallelSpec& spec,
                                                          std::shared_ptr<Communicator> comm,
                                                          FrozenShards pre_cut = {});

}  // namespace qlorad::trainer::parallel
