#include "worker/trainer/parallel/shard_on_load.h"

#include <utility>

namespace qlorad::trainer::parallel {

void ShardOnLoad::TakeNF4(const std::string& module, const ops::NF4Weight& weight) {
  Keep(module, ShardNF4Weight(weight, rank_, world_size_));
}

void ShardOnLoad::TakeDense(const std::string& module, const at::Tensor& weight) {
  Keep(module, ShardDenseWeight(weight, rank_, world_size_));
}

void ShardOnLoad::Keep(const std::string& module, FrozenShard cut) {
  if (on_host_) {
    for (auto& piece : cut.pieces) piece.local = piece.local.to(at::kCPU);
  }
  shards_[module] = std::move(cut);
}

}  // namespace qlorad::trainer::parallel
