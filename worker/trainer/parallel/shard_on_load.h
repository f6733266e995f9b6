// fsdp's sharded load: a FrozenWeightSink (model/model_loader.h) that keeps only this rank's dim-0
// shard (shard.h) of each decoder projection's frozen weight, so a rank holds 1/N of the decoder
// (plus the replicated embedding, norms and head) from the moment it loads, and a model whose NF4
// weights exceed one GPU still loads on N of them. The shards equal cutting the whole weights.
#pragma once

#include <string>

#include "worker/trainer/model/model_loader.h"
#include "worker/trainer/parallel/shard.h"

namespace qlorad::trainer::parallel {

class ShardOnLoad : public FrozenWeightSink {
 public:
  // `on_host`: the shards go to host memory (parallel.cpu_offload), not the device.
  ShardOnLoad(int rank, int world_size, bool on_host)
      : rank_(rank), world_size_(world_size), on_host_(on_host) {}

  void TakeNF4(const std::string& module, const ops::NF4Weight& weight) override;
  void TakeDense(const std::string& module, const at::Tensor& weight) override;

  // What the load cut, by module name: Parallelize's `pre_cut`.
  const FrozenShards& shards() const { return shards_; }
  FrozenShards TakeShards() { return std::move(shards_); }

 private:
  void Keep(const std::string& module, FrozenShard cut);

  int rank_, world_size_;
  bool on_host_;
  FrozenShards shards_;
};

}  // namespace qlorad::trainer::parallel
