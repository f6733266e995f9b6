#include "worker/trainer/parallel/parallelize.h"

#include <cmath>

#include "worker/trainer/model/adapter.h"
#include "worker/trainer/parallel/fsdp.h"

namespace qlorad::trainer::parallel {

namespace {

// single and ddp: the model keeps its own parameters; ddp sums their gradients across ranks.
class Replicated : public DataParallel {
 public:
  Replicated(LlamaModel& model, std::shared_ptr<Communicator> comm)
      : DataParallel(std::move(comm), /*sharded=*/false, model->device()), model_(model) {}

  std::vector<at::Tensor> Parameters() const override { return LoraParameters(model_); }

  // The LoRA gradients and a whole parameter's (the classification head) in one all-reduce:
  // they are small, and every rank has them all now.
  Status FinishBackward() override { return SumGradientsAcrossRanks(AllParameters()); }

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
  switch (spec.strategy) {
    case StrategyChoice::kAuto:
      return world_size > 1 ? Strategy::kFsdp : Strategy::kSingle;
    case StrategyChoice::kDdp:
      return Strategy::kDdp;
    case StrategyChoice::kFsdp:
      return Strategy::kFsdp;
    case StrategyChoice::kSingle:
      break;
  }
  if (world_size > 1) {
    return InvalidArgument("parallel.strategy: single runs one rank, but the world size is " +
                           std::to_string(world_size) + "; use ddp or fsdp");
  }
  return Strategy::kSingle;
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

StatusOr<ParallelDims> ParallelDims::Create(int replicate, int shard, int world_size) {
  if (replicate < 1 || shard < 1) {
    return InvalidArgument("parallel degrees must be at least 1, got replicate " +
                           std::to_string(replicate) + " x shard " + std::to_string(shard));
  }
  if (static_cast<int64_t>(replicate) * shard != world_size) {
    return InvalidArgument("parallel degrees replicate " + std::to_string(replicate) + " x shard " +
                           std::to_string(shard) + " != world size " + std::to_string(world_size));
  }
  return ParallelDims{replicate, shard};
}

StatusOr<ParallelDims> ParallelDims::For(Strategy strategy, int world_size) {
  switch (strategy) {
    case Strategy::kSingle:
      return Create(1, 1, world_size);
    case Strategy::kDdp:
      return Create(world_size, 1, world_size);
    case Strategy::kFsdp:
      return Create(1, world_size, world_size);
  }
  return InvalidArgument("parallel.strategy: unknown");
}

std::vector<at::Tensor> DataParallel::WholeTensors() const {
  std::vector<at::Tensor> tensors;
  for (const auto& entry : whole_) tensors.push_back(entry.second);
  return tensors;
}

std::vector<at::Tensor> DataParallel::AllParameters() const {
  std::vector<at::Tensor> params = Parameters();
  for (const at::Tensor& t : WholeTensors()) params.push_back(t);
  return params;
}

std::vector<ParameterLayout> DataParallel::AllParameterLayouts() const {
  std::vector<ParameterLayout> layouts = ParameterLayouts();
  for (const auto& [module, weight] : whole_) {
    // Split as the LoRA tensors are, over shard_count(): each rank writes its rows of the whole
    // tensor into its shard file, and resume reassembles it like any other.
    layouts.push_back({module, true, MakeShardSpec(weight, weight.size(-1), shard_count()),
                       /*whole=*/true});
  }
  return layouts;
}

Status DataParallel::SumGradientsAcrossRanks(const std::vector<at::Tensor>& params) {
  if (comm().world_size() == 1 || params.empty()) return Status::Ok();
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : params) {
    grads.push_back(p.grad().defined() ? p.grad().reshape({-1})
                                       : at::zeros({p.numel()}, p.options()));
  }
  at::Tensor flat = at::cat(grads);
  QLORAD_RETURN_IF_ERROR(comm().AllReduceSum(flat)->Wait());
  // Back into the gradients in one batched copy rather than a kernel per tensor.
  std::vector<at::Tensor> grads_out, sums;
  int64_t offset = 0;
  for (const at::Tensor& p : params) {
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

StatusOr<at::Tensor> DataParallel::ClipGradNorm(double max_norm) {
  const std::vector<at::Tensor> params = AllParameters();
  if (params.empty()) return at::zeros({1}, at::kDouble);
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  at::NoGradGuard no_grad;
  // Squares summed in fp64, so the norm does not depend on how the gradients are split. One
  // concatenation, not a few kernels per parameter: a LoRA has hundreds of small tensors.
  const auto sum_of_squares = [&](const std::vector<at::Tensor>& of) {
    std::vector<at::Tensor> flat;
    for (const at::Tensor& p : of) {
      if (p.grad().defined()) flat.push_back(p.grad().reshape({-1}));
    }
    if (flat.empty())
      return at::zeros({1}, at::TensorOptions(collective_device_).dtype(at::kDouble));
    return at::cat(flat).to(at::kDouble).square().sum().reshape({1}).to(collective_device_);
  };
  at::Tensor squares;
  if (sharded_) {
    // Each rank's shards, summed over ranks; the whole parameters are the same on every rank
    // (their gradients were summed), so they count once, after the all-reduce.
    squares = sum_of_squares(Parameters());
    QLORAD_RETURN_IF_ERROR(comm_->AllReduceSum(squares)->Wait());
    if (!whole_.empty()) squares = squares + sum_of_squares(WholeTensors());
  } else {
    squares = sum_of_squares(params);
  }
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

StatusOr<std::unique_ptr<DataParallel>> ApplyDataParallel(LlamaModel& model, Strategy strategy,
                                                          const ParallelSpec& spec,
                                                          std::shared_ptr<Communicator> comm,
                                                          FrozenShards pre_cut) {
  const StatusOr<ParallelDims> dims = ParallelDims::For(strategy, comm->world_size());
  if (!dims.ok()) {
    return InvalidArgument(std::string("parallel.strategy: ") + StrategyName(strategy) + " on " +
                           std::to_string(comm->world_size()) +
                           " ranks: " + dims.status().message());
  }
  if (spec.cpu_offload && strategy != Strategy::kFsdp) {
    return InvalidArgument(std::string("parallel.cpu_offload: offloads fsdp's sharded state; with "
                                       "strategy ") +
                           StrategyName(strategy) + " there is none to offload; use fsdp or false");
  }
  // Sharding comes last: it replaces each projection's weights by shards, cut from the
  // quantized weights with LoRA attached (a sharded load cut the frozen ones as they loaded).
  if (strategy == Strategy::kFsdp) {
    return MakeFsdp(model, spec, std::move(comm), std::move(pre_cut));
  }
  if (!pre_cut.empty()) {
    return FailedPrecondition(std::string("parallel.strategy: ") + StrategyName(strategy) +
                              " needs every rank's whole model, but it was loaded sharded");
  }
  return std::unique_ptr<DataParallel>(std::make_unique<Replicated>(model, std::move(comm)));
}

StatusOr<Parallelized> Parallelize(LlamaModel& model, const ParallelizeOptions& options,
                                   std::shared_ptr<Communicator> comm, FrozenShards pre_cut) {
  Parallelized out;
  // 1. Quantize, then LoRA: LoRA's A is drawn in module order from one seeded generator, so
  //    every rank builds the same adapters, and sharding (4) cuts its part of them.
  QLORAD_ASSIGN_OR_RETURN(out.qlora, ApplyQLora(model, options.quantization, options.lora,
                                                options.seed, options.lora_dtype));
  // 2. A starting adapter replaces the drawn one while every rank still holds it whole.
  if (options.lora.init_from) {
    QLORAD_RETURN_IF_ERROR(LoadAdapter(model, *options.lora.init_from));
  }
  if (LoraParameters(model).empty()) {
    return InvalidArgument("lora.target_modules: no trainable parameters");
  }
  if (options.strategy == Strategy::kFsdp && model->lm_head_linear()->has_lora()) {
    // fsdp shards the decoder projections only; a replicated head LoRA would need its own
    // gradient all-reduce and a place in the sharded checkpoints.
    return InvalidArgument(
        "lora.target_modules: lm_head with parallel.strategy fsdp is not supported; use ddp");
  }
  // 3. Replicate or shard (with fsdp's offload).
  QLORAD_ASSIGN_OR_RETURN(out.data_parallel,
                          ApplyDataParallel(model, options.strategy, options.parallel,
                                            std::move(comm), std::move(pre_cut)));
  return out;
}

}  // namespace qlorad::trainer::parallel
