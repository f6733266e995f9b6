// The LoRA gradients of one fsdp unit across ranks (see fsdp.h). Each backward through the unit's
// LoRA gather hands its full gradients to Start, which packs them and starts an fp32
// reduce-scatter; nothing waits on it until the optimizer step's last backward is over
// (AccumulateInto), so a layer's backward never stalls on its own gradients' collective. Each
// rank then adds the sums of its rows into its shards' .grad.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "common/status.h"
#include "worker/trainer/parallel/communicator.h"
#include "worker/trainer/parallel/shard.h"

namespace qlorad::trainer::parallel {

class FsdpGradientReducer {
 public:
  // `specs`: how each LoRA tensor is split across ranks. `grad_options`: the device and dtype of
  // the gradients backward hands over (one that backward leaves undefined is zeros of these).
  // `sums_to_host`: the shards live in host memory (CPU offload), so the sums are copied there.
  FsdpGradientReducer(Communicator& comm, std::vector<ShardSpec> specs,
                      at::TensorOptions grad_options, bool sums_to_host);

  // Starts the reduce-scatter of one backward's full LoRA gradients, one per spec, and returns.
  void Start(const std::vector<at::Tensor>& grads);
  // Waits for every reduce-scatter started since the last call and adds its sums into `shards`'
  // .grad (this rank's shard of each spec, as the optimizer holds them).
  Status AccumulateInto(const std::vector<at::Tensor>& shards);

 private:
  struct Pending {
    std::unique_ptr<Work> work;
    at::Tensor input;   // kept alive until the collective is done
    at::Tensor output;  // this rank's fp32 sums, every LoRA shard back to back
  };

  Communicator& comm_;
  std::vector<ShardSpec> specs_;
  at::TensorOptions grad_options_;
  bool sums_to_host_;
  std::vector<Pending> pending_;
};

}  // namespace qlorad::trainer::parallel
