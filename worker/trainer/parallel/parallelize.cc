#include "worker/trainer/parallel/parallelize.h"

#include <cmath>

#include "worker/trainer/parallel/fsdp.h"
#include "worker/trainer/qlora.h"

namespace qlorad::trainer::parallel {

namespace {

// single and ddp: the model keeps its own parameters; ddp sums their gradients across ranks.
class Replicated : public DataParallel {
 public:
  Replicated(LlamaModel& model, std::shared_ptr<Communicator> comm)
      : DataParallel(std::move(comm), /*sharded=*/false, model->device()), model_(model) {}

  std::vector<at::Tensor> Parameters() const override { return LoraParameters(model_); }

  Status FinishBackward() override {
    if (comm().world_size() == 1) return Status::Ok();
    // One all-reduce for all LoRA gradients: they are small, and every rank has them all now.
    std::vector<at::Tensor> grads;
    for (const at::Tensor& p : Parameters()) {
      grads.push_back(p.grad().defined() ? p.grad().reshape({-1})
                                         : at::zeros({p.numel()}, p.options()));
    }
    at::Tensor flat = at::cat(grads);
    QLORAD_RETURN_IF_ERROR(comm().AllReduceSum(flat)->Wait());
    // Back into the gradients in one batched copy rather than a kernel per tensor.
    std::vector<at::Tensor> grads_out, sums;
    int64_t offset = 0;
    for (at::Tensor& p : Parameters()) {
      at::Tensor sum = flat.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        grads_out.push_back(p.mutable_grad());
        sums.push_back(sum);
      } else {
        p.mutable_grad() = sum.clone();  // no gradient here (unused on this rank): a new one
      }
      offset += p.numel();
    }
    if (!grads_out.empty()) at::_foreach_copy_(grads_out, sums);
    return Status::Ok();
  }

  Status ForEachAdapterTensor(const TensorWriter& write) override {
    if (comm().rank() != 0) return Status::Ok();
    for (const auto& [name, linear] : model_->NamedLoraTargets()) {
      if (!linear->has_lora()) continue;
      QLORAD_RETURN_IF_ERROR(write(name, true, linear->lora_a()));
      QLORAD_RETURN_IF_ERROR(write(name, false, linear->lora_b()));
    }
    return Status::Ok();
  }

  std::vector<ParameterLayout> ParameterLayouts() const override {
    std::vector<ParameterLayout> layouts;
    for (const auto& [name, linear] : model_->NamedLoraTargets()) {
      if (!linear->has_lora()) continue;
      for (const bool a : {true, false}) {
        const at::Tensor& full = a ? linear->lora_a() : linear->lora_b();
        layouts.push_back({name, a, MakeShardSpec(full, full.size(1), /*world_size=*/1)});
      }
    }
    return layouts;
  }

 private:
  LlamaModel model_;
};

}  // namespace

StatusOr<Strategy> ResolveStrategy(const ParallelSpec& spec, int world_size) {
  if (spec.strategy == "auto") return world_size > 1 ? Strategy::kFsdp : Strategy::kSingle;
  if (spec.strategy == "ddp") return Strategy::kDdp;
  if (spec.strategy == "fsdp") return Strategy::kFsdp;
  if (spec.strategy == "single") {
    if (world_size > 1) {
      return InvalidArgument("parallel.strategy: single runs one rank, but the world size is " +
                             std::to_string(world_size) + "; use ddp or fsdp");
    }
    return Strategy::kSingle;
  }
  return InvalidArgument("parallel.strategy: expected auto, single, ddp or fsdp, got '" +
                         spec.strategy + "'");
}

const char* StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kSingle:
      return "single";
    case Strategy::kDdp:
      return "ddp";
    case Strategy::kFsdp:
      return "fsdp";
  }
  return "?";
}

StatusOr<ParallelDims> ParallelDims::Create(Strategy strategy, int world_size) {
  if (world_size < 1) return InvalidArgument("world size " + std::to_string(world_size));
  ParallelDims dims;
  (strategy == Strategy::kFsdp ? dims.shard : dims.replicate) = world_size;
  if (dims.world_size() != world_size) {
    return InvalidArgument("parallel degrees replicate " + std::to_string(dims.replicate) +
                           " x shard " + std::to_string(dims.shard) + " != world size " +
                           std::to_string(world_size));
  }
  return dims;
}

StatusOr<at::Tensor> DataParallel::ClipGradNorm(double max_norm) {
  const std::vector<at::Tensor> params = Parameters();
  if (params.empty()) return at::zeros({1}, at::kDouble);
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  at::NoGradGuard no_grad;
  // Squares summed in fp64, so the norm does not depend on how the gradients are split. One
  // concatenation, not a few kernels per parameter: a LoRA has hundreds of small tensors.
  std::vector<at::Tensor> flat;
  for (const at::Tensor& g : grads) flat.push_back(g.reshape({-1}));
  at::Tensor squares = at::zeros({1}, params[0].options().dtype(at::kDouble));
  if (!flat.empty()) squares = at::cat(flat).to(at::kDouble).square().sum().reshape({1});
  squares = squares.to(collective_device_);
  if (sharded_) QLORAD_RETURN_IF_ERROR(comm_->AllReduceSum(squares)->Wait());
  const at::Tensor norm = squares.sqrt();
  if (std::isfinite(max_norm) && !grads.empty()) {
    // torch::nn::utils::clip_grad_norm_'s coefficient, clamped to 1 (a multiplication by 1 is
    // exact), computed on the device: the host never waits here.
    const at::Tensor coefficient = (max_norm / (norm + 1e-6))
                                       .clamp_max(1.0)
                                       .to(grads[0].device(), grads[0].dtype())
                                       .reshape({});
    at::_foreach_mul_(grads, coefficient);
  }
  return norm;
}

StatusOr<std::unique_ptr<DataParallel>> Parallelize(LlamaModel& model, Strategy strategy,
                                                    const ParallelSpec& spec,
                                                    std::shared_ptr<Communicator> comm,
                                                    FrozenShards pre_cut) {
  QLORAD_ASSIGN_OR_RETURN(const ParallelDims dims,
                          ParallelDims::Create(strategy, comm->world_size()));
  if (spec.cpu_offload && strategy != Strategy::kFsdp) {
    return InvalidArgument(std::string("parallel.cpu_offload: offloads fsdp's sharded state; with "
                                       "strategy ") +
                           StrategyName(strategy) + " there is none to offload; use fsdp or false");
  }
  if (strategy == Strategy::kSingle && dims.world_size() != 1) {
    return InvalidArgument("parallel.strategy: single with world size " +
                           std::to_string(dims.world_size()));
  }
  // Order: LoRA and quantization are already applied (the shards are cut from their result; a
  // sharded load cut the frozen ones from the quantized weights as they loaded); sharding comes
  // last, because it replaces each projection's weights by shards.
  if (strategy == Strategy::kFsdp)
    return MakeFsdp(model, spec, std::move(comm), std::move(pre_cut));
  if (!pre_cut.empty()) {
    return FailedPrecondition(std::string("parallel.strategy: ") + StrategyName(strategy) +
                              " needs every rank's whole model, but it was loaded sharded");
  }
  return std::unique_ptr<DataParallel>(std::make_unique<Replicated>(model, std::move(comm)));
}

}  // namespace qlorad::trainer::parallel
