#include "worker/trainer/parallel/shard.h"

#include <algorithm>

namespace qlorad::trainer::parallel {

ShardSpec MakeShardSpec(const at::Tensor& tensor, int64_t unit, int world_size) {
  return MakeShardSpec(tensor.sizes().vec(), unit, world_size);
}

ShardSpec MakeShardSpec(std::vector<int64_t> shape, int64_t unit, int world_size) {
  TORCH_CHECK(unit > 0 && world_size > 0, "MakeShardSpec: unit ", unit, ", world size ",
              world_size);
  ShardSpec spec;
  spec.shape = std::move(shape);
  spec.numel = c10::multiply_integers(spec.shape);
  spec.unit = unit;
  spec.rows = (spec.numel + unit - 1) / unit;
  spec.rows_per_rank = (spec.rows + world_size - 1) / world_size;
  return spec;
}

at::Tensor ShardOf(const at::Tensor& tensor, const ShardSpec& spec, int rank) {
  TORCH_CHECK(tensor.numel() == spec.numel, "ShardOf: tensor of ", tensor.numel(),
              " elements for a spec of ", spec.numel);
  at::Tensor shard = at::zeros({spec.shard_numel()}, tensor.options());
  const int64_t begin = std::min(rank * spec.shard_numel(), spec.numel);
  const int64_t end = std::min(begin + spec.shard_numel(), spec.numel);
  if (end > begin) {
    shard.narrow(0, 0, end - begin).copy_(tensor.reshape({-1}).narrow(0, begin, end - begin));
  }
  return shard;
}

at::Tensor Unshard(const at::Tensor& gathered, const ShardSpec& spec) {
  TORCH_CHECK(gathered.numel() % spec.shard_numel() == 0, "Unshard: ", gathered.numel(),
              " gathered elements are not whole shards of ", spec.shard_numel());
  return gathered.reshape({-1}).narrow(0, 0, spec.numel).view(spec.shape);
}

NF4Shards MakeNF4Shards(const ops::NF4Weight& weight, int world_size) {
  TORCH_CHECK(weight.blocksize % 2 == 0, "NF4 blocksize ", weight.blocksize, " is odd");
  NF4Shards shards;
  shards.meta = weight;
  shards.meta.packed = at::Tensor();
  shards.meta.absmax = at::Tensor();
  shards.packed = MakeShardSpec(weight.packed, weight.blocksize / 2, world_size);
  shards.absmax = MakeShardSpec(weight.absmax, 1, world_size);
  TORCH_CHECK(shards.packed.rows == shards.absmax.rows, "NF4 weight with ", shards.packed.rows,
              " blocks of packed bytes but ", shards.absmax.rows, " absmax entries");
  return shards;
}

std::pair<at::Tensor, at::Tensor> NF4ShardOf(const ops::NF4Weight& weight, const NF4Shards& shards,
                                             int rank) {
  return {ShardOf(weight.packed, shards.packed, rank), ShardOf(weight.absmax, shards.absmax, rank)};
}

ops::NF4Weight UnshardNF4(const NF4Shards& shards, const at::Tensor& gathered_packed,
                          const at::Tensor& gathered_absmax) {
  ops::NF4Weight weight = shards.meta;
  weight.packed = Unshard(gathered_packed, shards.packed);
  weight.absmax = Unshard(gathered_absmax, shards.absmax);
  return weight;
}

FrozenShard ShardNF4Weight(const ops::NF4Weight& weight, int rank, int world_size) {
  FrozenShard shard;
  shard.nf4 = MakeNF4Shards(weight, world_size);
  const auto [packed, absmax] = NF4ShardOf(weight, *shard.nf4, rank);
  shard.pieces.push_back({packed, shard.nf4->packed});
  shard.pieces.push_back({absmax, shard.nf4->absmax});
  return shard;
}

FrozenShard ShardDenseWeight(const at::Tensor& weight, int rank, int world_size) {
  TORCH_CHECK(weight.dim() == 2, "ShardDenseWeight: a [out, in] weight, got ", weight.sizes());
  const ShardSpec spec = MakeShardSpec(weight, weight.size(1), world_size);
  FrozenShard shard;
  shard.pieces.push_back({ShardOf(weight, spec, rank), spec});
  return shard;
}

}  // namespace qlorad::trainer::parallel
