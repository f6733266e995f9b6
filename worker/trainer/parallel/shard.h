// Dim-0 sharding of flat tensors. A tensor is viewed as rows of `unit` elements (a weight row, an
// NF4 block's packed bytes, one absmax); the rows are padded with zeros to a multiple of the world
// size and rank r holds rows [r * rows_per_rank, (r + 1) * rows_per_rank). Gathering every rank's
// shard in rank order and dropping the padding gives back the tensor bit for bit.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernels/torch/nf4_ops.h"

namespace qlorad::trainer::parallel {

struct ShardSpec {
  std::vector<int64_t> shape;  // of the whole tensor
  int64_t numel = 0;
  int64_t unit = 1;  // elements per row
  int64_t rows = 0;  // ceil(numel / unit), before padding
  int64_t rows_per_rank = 0;

  int64_t shard_numel() const { return rows_per_rank * unit; }
};

ShardSpec MakeShardSpec(const at::Tensor& tensor, int64_t unit, int world_size);
// The same for a tensor known by its shape (a checkpoint's manifest).
ShardSpec MakeShardSpec(std::vector<int64_t> shape, int64_t unit, int world_size);
// This rank's rows, zero-padded, as a new contiguous 1-D tensor of shard_numel() elements.
at::Tensor ShardOf(const at::Tensor& tensor, const ShardSpec& spec, int rank);
// `gathered`: every rank's shard concatenated in rank order (world_size * shard_numel()).
at::Tensor Unshard(const at::Tensor& gathered, const ShardSpec& spec);

// An NF4 weight split on its quantization blocks: each rank holds whole blocks (their packed
// bytes and absmax values, or absmax codes with double quantization). The double-quantization
// state (nested absmax per 256 blocks, code table, offset) is a few floats and stays replicated.
struct NF4Shards {
  ops::NF4Weight meta;  // shape, blocksize, dtype, and the replicated nested state
  ShardSpec packed;     // rows = blocks, unit = blocksize / 2 bytes
  ShardSpec absmax;     // rows = blocks, unit = 1
};

NF4Shards MakeNF4Shards(const ops::NF4Weight& weight, int world_size);
// This rank's packed bytes and absmax entries.
std::pair<at::Tensor, at::Tensor> NF4ShardOf(const ops::NF4Weight& weight, const NF4Shards& shards,
                                             int rank);
// Reassembles the weight from the gathered packed bytes and absmax entries (rank order).
ops::NF4Weight UnshardNF4(const NF4Shards& shards, const at::Tensor& gathered_packed,
                          const at::Tensor& gathered_absmax);

// One projection's frozen weight as one rank keeps it under fsdp: its pieces, each this rank's
// shard of a flat tensor. NF4: the packed blocks, then their absmax entries; dense: its rows.
struct FrozenShard {
  struct Piece {
    at::Tensor local;  // 1-D, spec.shard_numel() elements
    ShardSpec spec;
  };
  std::optional<NF4Shards> nf4;  // the NF4 layout; absent for a dense weight
  std::vector<Piece> pieces;
};

FrozenShard ShardNF4Weight(const ops::NF4Weight& weight, int rank, int world_size);
// `weight` [out, in], split on its rows.
FrozenShard ShardDenseWeight(const at::Tensor& weight, int rank, int world_size);
// Each projection's frozen shard by module name ("model.layers.0.self_attn.q_proj"): what a
// sharded load hands to fsdp.
using FrozenShards = std::map<std::string, FrozenShard>;

}  // namespace qlorad::trainer::parallel
