// FSDP2-style sharding of a QLoRA Llama, one unit per decoder layer.
//
// Each rank keeps dim-0 shards of the layer's frozen weights (as bytes: NF4 packed blocks and
// their absmax, or dense rows) and of its LoRA A/B (fp32 leaves, the optimizer's parameters).
// The layer's projections take their weights from the unit (ExternalWeights):
//  - forward: the first projection to run gathers the unit: one all-gather carries its frozen
//    bytes and its LoRA shards (in the adapters' compute dtype, lora.compute_precision), then the
//    next unit's gather starts, so it travels while this layer computes (prefetch). Each base
//    matmul dequantizes its gathered weight, multiplies, and drops the dense copy. After the last
//    projection the frozen bytes are freed (reshard_after_forward: true, ZeRO-3; the last layer
//    is kept, backward starts there) or kept until backward (false, ZeRO-2).
//  - backward: a base matmul saves no weight; it gathers its unit again if freed (frozen bytes
//    only: autograd kept the LoRA tensors), frees the units after it and starts the previous
//    unit's gather (backward runs layer by layer, last to first). The LoRA gather's backward
//    starts an fp32 reduce-scatter of the gradients and returns; FinishBackward waits for them
//    and adds the sums into the shards' .grad, so no layer's backward waits on a collective.
//  - activation recompute (activation_recompute.h): a checkpointed layer's forward runs
//    without grad, so its LoRA gather records no node, and runs again when backward reaches it.
//    That recompute frees the later units, gathers the unit with its LoRA (the recomputed
//    graph's LoRA gather is the one whose backward reduce-scatters, once per micro-batch),
//    prefetches the previous unit, LoRA included (it is recomputed next), and keeps the unit
//    gathered for the backward that follows at once.
// Collectives run in the order of the ops that trigger them, which every rank replays alike. On
// NCCL a gather runs on the communicator's stream and waiting on it only orders the compute
// stream after it, so a gather started one layer ahead overlaps that layer's compute; with the
// prefetched one in flight at most two units' frozen weights are unsharded, plus one in transit.
//
// In fsdp.cc an FsdpUnit keeps this schedule and the projections' hooks, and knows its
// neighbours (none before the first layer, none after the last) for the prefetches; what a
// rank's part of a gather holds and how the gathered bytes become weights is FsdpFlatBuffer's
// (fsdp_flat_buffer.h), and the reduce-scatters in flight until FinishBackward are
// FsdpGradientReducer's (fsdp_gradient_reducer.h).
#pragma once

#include <memory>

#include "common/jobspec.h"
#include "worker/trainer/parallel/parallelize.h"

namespace qlorad::trainer::parallel {

// `pre_cut`: this rank's frozen shards from a sharded load (see Parallelize).
std::unique_ptr<DataParallel> MakeFsdp(LlamaModel& model, const ParallelSpec& spec,
                                       std::shared_ptr<Communicator> comm, FrozenShards pre_cut);

}  // namespace qlorad::trainer::parallel
