#include "worker/trainer/parallel/fsdp.h"

#include <torch/torch.h>

#include <optional>
#include <utility>

#include "worker/trainer/model/qlora_linear.h"
#include "worker/trainer/parallel/activation_recompute.h"
#include "worker/trainer/parallel/fsdp_flat_buffer.h"
#include "worker/trainer/parallel/fsdp_gradient_reducer.h"
#include "worker/trainer/parallel/shard.h"
#include "worker/trainer/runtime/autograd_context.h"

namespace qlorad::trainer::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using NamedLinears = std::vector<std::pair<std::string, QLoraLinear>>;

enum class Phase { kForward, kBackward };

// Each projection's frozen shard on this rank: taken out of `pre_cut` (a sharded load; the layer
// then holds a placeholder) if there, else cut here from the layer's whole weight.
std::vector<FrozenShard> TakeFrozenShards(const NamedLinears& linears, FrozenShards& pre_cut,
                                          int rank, int world) {
  std::vector<FrozenShard> shards;
  for (const auto& [name, linear] : linears) {
    FrozenShard frozen;
    if (auto it = pre_cut.find(name); it != pre_cut.end()) {
      frozen = std::move(it->second);
      pre_cut.erase(it);
    } else if (const auto& nf4 = linear->nf4_weight()) {
      frozen = ShardNF4Weight(*nf4, rank, world);
    } else {
      frozen = ShardDenseWeight(linear->dense_weight(), rank, world);
    }
    TORCH_CHECK(frozen.nf4.has_value() == linear->quantized(), name,
                ": the frozen shard's form (NF4 or dense) differs from the layer's");
    shards.push_back(std::move(frozen));
  }
  return shards;
}

// A layer's LoRA parameters on this rank: what its optimizer steps.
struct LoraShards {
  std::vector<at::Tensor> tensors;              // fp32 leaves [rows_per_rank * unit]
  std::vector<ShardSpec> specs;                 // A then B of each adapted projection
  std::vector<size_t> owner;                    // lora tensor -> projection
  std::vector<std::optional<size_t>> first_of;  // projection -> its A (B follows)
  at::ScalarType gather_dtype = at::kFloat;     // the adapters' compute dtype
};

// `to_host`: CPU offload, the shards (and so their gradients and AdamW's state) live in host
// memory.
LoraShards CutLoraShards(const NamedLinears& linears, int rank, int world, bool to_host) {
  LoraShards lora;
  lora.first_of.resize(linears.size());
  for (size_t i = 0; i < linears.size(); ++i) {
    const QLoraLinearImpl& layer = *linears[i].second;
    if (!layer.has_lora()) continue;
    lora.gather_dtype = layer.lora_options().compute_dtype;  // one LoraOptions for every projection
    lora.first_of[i] = lora.tensors.size();
    for (const at::Tensor& full : {layer.lora_a(), layer.lora_b()}) {
      // A [r, in] and B [out, r] split on their rows.
      const ShardSpec spec = MakeShardSpec(full, full.size(1), world);
      at::Tensor shard = ShardOf(full.detach(), spec, rank);
      if (to_host) shard = shard.to(at::kCPU);
      lora.tensors.push_back(shard.requires_grad_(true));
      lora.specs.push_back(spec);
      lora.owner.push_back(i);
    }
  }
  return lora;
}

at::Device ComputeDevice(const NamedLinears& linears) {
  const QLoraLinearImpl& first = *linears.front().second;
  return first.nf4_weight() ? first.nf4_weight()->packed.device() : first.dense_weight().device();
}

// One decoder layer under fsdp: when its weights are gathered and freed (the schedule in fsdp.h)
// and the hooks its projections take their weights from. What the gathered bytes hold is
// FsdpFlatBuffer's business; the reduction of the LoRA gradients is FsdpGradientReducer's.
class FsdpUnit {
 public:
  // Takes each projection's entry out of `pre_cut`, if there, else cuts the layer's own weight.
  FsdpUnit(NamedLinears linears, FrozenShards& pre_cut, Communicator& comm,
           bool reshard_after_forward, bool cpu_offload);

  // The units of the layers before and after this one, null at the ends of the model.
  void Link(FsdpUnit* previous, FsdpUnit* next) {
    previous_ = previous;
    next_ = next;
  }

  const std::vector<at::Tensor>& lora_shards() const { return lora_.tensors; }
  const std::vector<ShardSpec>& lora_specs() const { return lora_.specs; }
  const NamedLinears& linears() const { return linears_; }
  size_t lora_linear(size_t k) const { return lora_.owner[k]; }

  // The projection hooks (see ExternalWeights).
  at::Tensor BaseForward(size_t linear, const at::Tensor& x);
  std::pair<at::Tensor, at::Tensor> Lora(size_t linear) const;

  // For the autograd function below.
  at::Tensor FullWeight(size_t linear, at::ScalarType dtype, Phase phase);
  variable_list GatherLora();
  FsdpGradientReducer& reducer() { return reducer_; }

  // After the step's last backward: drops what is gathered, waits for the step's reduce-scatters
  // and adds their sums into the shards' .grad.
  Status FinishBackward();

  // The full value of LoRA tensor `k` (2m: A of the m-th adapted projection, 2m + 1: its B).
  StatusOr<at::Tensor> GatherLoraTensor(size_t k);

 private:
  // A started all-gather; `output` [world * part bytes] is filled once `work` is waited on.
  struct InFlightGather {
    std::unique_ptr<Work> work;
    at::Tensor output;
    FsdpGatherContents contents;
  };

  // Starts the all-gather of the frozen shards unless they are gathered or on their way; a
  // forward gather carries the LoRA shards in the same collective (backward has its LoRA saved).
  void StartGather(Phase phase);
  // Finishes it (starting it first if needed) and unshards every weight.
  void Gather(Phase phase);
  void Free() { gathered_.reset(); }
  // Backward reached this unit, so every later one is done: at most two stay unsharded, this one
  // and the previous one's prefetch.
  void FreeLaterUnits() const {
    for (FsdpUnit* later = next_; later != nullptr; later = later->next_) later->Free();
  }
  // Starts `unit`'s gather ahead of its turn (forward: the next unit; backward: the previous);
  // there is none past either end of the model.
  static void Prefetch(FsdpUnit* unit, Phase phase) {
    if (unit != nullptr) unit->StartGather(phase);
  }
  // `t` where the collectives run: offloaded state is copied up (asynchronously from pinned
  // memory, ordered before the collective on the current stream).
  at::Tensor OnDevice(const at::Tensor& t) const {
    return offload_ ? t.to(device_, /*non_blocking=*/true) : t;
  }

  NamedLinears linears_;
  Communicator& comm_;
  bool reshard_after_forward_;
  at::Device device_;  // where the layer computes and the collectives run
  // Sharded state (the flat buffer, the LoRA shards, their gradients and so AdamW's state) lives
  // in host memory; gathers stage through the device and reduced gradients come back to the host.
  bool offload_;
  FsdpUnit* previous_ = nullptr;
  FsdpUnit* next_ = nullptr;

  LoraShards lora_;
  FsdpFlatBuffer buffer_;
  FsdpGradientReducer reducer_;
  std::vector<FrozenWeightSource> weight_sources_;  // per projection: FullWeight, for FrozenLinear

  std::optional<InFlightGather> in_flight_;
  // The unit's weights while gathered; `lora` is there from a forward gather until LoraGather
  // takes it.
  std::optional<FsdpUnsharded> gathered_;
  variable_list lora_full_;  // this forward's gathered A and B, outputs of LoraGather
  size_t forward_uses_ = 0;  // projections run in this forward of the layer
};

// Full LoRA tensors from the local shards (all-gathered with the unit's frozen bytes). Backward
// starts the reduce-scatter of their gradients and returns none: the unit adds the reduced sums
// into the shards' .grad once the step's backward is over (FinishBackward).
struct LoraGather : torch::autograd::Function<LoraGather> {
  static variable_list forward(AutogradContext* ctx, at::TensorList shards, FsdpUnit* unit) {
    SaveBorrowed(ctx, "reducer", &unit->reducer());
    TORCH_CHECK(shards.size() == unit->lora_shards().size(), "LoraGather: another unit's shards");
    return unit->GatherLora();  // one full tensor per shard
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    LoadBorrowed<FsdpGradientReducer>(ctx, "reducer")->Start(grads);
    return variable_list(grads.size() + 1);  // none for the shards (one per output); the pointer
  }
};

FsdpUnit::FsdpUnit(NamedLinears linears, FrozenShards& pre_cut, Communicator& comm,
                   bool reshard_after_forward, bool cpu_offload)
    : linears_(std::move(linears)),
      comm_(comm),
      reshard_after_forward_(reshard_after_forward),
      device_(ComputeDevice(linears_)),
      offload_(cpu_offload && device_.is_cuda()),  // on a CPU run everything is in host memory
      lora_(CutLoraShards(linears_, comm_.rank(), comm_.world_size(), offload_)),
      buffer_(TakeFrozenShards(linears_, pre_cut, comm_.rank(), comm_.world_size()), lora_.specs,
              lora_.gather_dtype,
              at::TensorOptions(offload_ ? at::Device(at::kCPU) : device_).pinned_memory(offload_)),
      reducer_(comm_, lora_.specs, at::TensorOptions(device_).dtype(lora_.gather_dtype),
               /*sums_to_host=*/offload_) {
  for (size_t i = 0; i < linears_.size(); ++i) {
    weight_sources_.emplace_back([this, i](at::ScalarType dtype, bool backward) {
      return FullWeight(i, dtype, backward ? Phase::kBackward : Phase::kForward);
    });
  }
  for (size_t i = 0; i < linears_.size(); ++i) {
    linears_[i].second->UseExternalWeights(
        {[this, i](const at::Tensor& x) { return BaseForward(i, x); },
         [this, i] { return Lora(i); }});
  }
}

at::Tensor FsdpUnit::BaseForward(size_t linear, const at::Tensor& x) {
  // A checkpointed layer running again in backward (activation_recompute.h): its graph's
  // backward follows at once, so this is backward's turn at the unit, in backward's order.
  const bool recompute = InActivationRecompute();
  if (forward_uses_ == 0) {
    if (recompute) FreeLaterUnits();
    // Frozen bytes and LoRA alike: the recomputed graph needs its own LoraGather node (the
    // checkpointed forward ran without grad and recorded none), whose backward reduce-scatters
    // the LoRA gradients, once.
    StartGather(Phase::kForward);
    // Recomputing, the previous unit is next, and it too will be recomputed: its prefetch
    // carries its LoRA shards as a forward gather does, saving a LoRA-only gather.
    Prefetch(recompute ? previous_ : next_, Phase::kForward);
    if (!lora_.tensors.empty()) {
      lora_full_ = LoraGather::apply(at::TensorList(lora_.tensors), this);
    }
  }
  // Saves no weight: backward gathers the frozen shards again (FullWeight in backward).
  at::Tensor y = FrozenLinear(x, weight_sources_[linear]);
  if (++forward_uses_ == linears_.size()) {  // the layer's last projection has run
    forward_uses_ = 0;
    // The last unit stays: backward starts with it (as FSDP2 keeps the root's last layer). A
    // recomputed unit stays too: the backward that follows uses it.
    if (reshard_after_forward_ && next_ != nullptr && !recompute) Free();
  }
  return y;
}

std::pair<at::Tensor, at::Tensor> FsdpUnit::Lora(size_t linear) const {
  const size_t k = *lora_.first_of[linear];
  return {lora_full_.at(k), lora_full_.at(k + 1)};
}

at::Tensor FsdpUnit::FullWeight(size_t linear, at::ScalarType dtype, Phase phase) {
  if (phase == Phase::kBackward) {
    FreeLaterUnits();
    StartGather(phase);
    Prefetch(previous_, phase);
  }
  if (!gathered_) Gather(phase);
  const FsdpUnshardedWeight& weight = gathered_->weights[linear];
  if (weight.nf4) return ops::DequantizeNF4(*weight.nf4, dtype);
  return weight.dense.to(dtype);
}

void FsdpUnit::StartGather(Phase phase) {
  if (gathered_ || in_flight_) return;
  const FsdpGatherContents contents = phase == Phase::kForward && !lora_.tensors.empty()
                                          ? FsdpGatherContents::kFrozenAndLora
                                          : FsdpGatherContents::kFrozen;
  if (contents == FsdpGatherContents::kFrozenAndLora) buffer_.PackLora(lora_.tensors);
  at::Tensor send = OnDevice(buffer_.Send(contents));
  at::Tensor output = at::empty({comm_.world_size() * send.numel()}, send.options());
  std::unique_ptr<Work> work = comm_.AllGather(output, send);
  in_flight_ = InFlightGather{std::move(work), std::move(output), contents};
}

void FsdpUnit::Gather(Phase phase) {
  StartGather(phase);
  InFlightGather gather = std::move(*in_flight_);
  in_flight_.reset();
  WaitOrThrow(std::move(gather.work));
  gathered_ = buffer_.Unpack(gather.output, gather.contents);
}

variable_list FsdpUnit::GatherLora() {
  if (!gathered_) Gather(Phase::kForward);
  if (!gathered_->lora.empty()) return std::exchange(gathered_->lora, {});
  // The frozen bytes were already here (kept from the previous micro-batch's backward), so the
  // LoRA shards travel alone.
  buffer_.PackLora(lora_.tensors);
  at::Tensor send = OnDevice(buffer_.Send(FsdpGatherContents::kLora));
  at::Tensor out = at::empty({comm_.world_size() * send.numel()}, send.options());
  WaitOrThrow(comm_.AllGather(out, send));
  return buffer_.Unpack(out, FsdpGatherContents::kLora).lora;
}

Status FsdpUnit::FinishBackward() {
  Free();
  lora_full_.clear();
  return reducer_.AccumulateInto(lora_.tensors);
}

StatusOr<at::Tensor> FsdpUnit::GatherLoraTensor(size_t k) {
  const ShardSpec& spec = lora_.specs[k];
  at::Tensor local = OnDevice(lora_.tensors[k].detach());
  at::Tensor out = at::empty({comm_.world_size() * spec.shard_numel()}, local.options());
  QLORAD_RETURN_IF_ERROR(comm_.AllGather(out, local)->Wait());
  return Unshard(out, spec);
}

class Fsdp : public DataParallel {
 public:
  Fsdp(LlamaModel& model, const ParallelSpec& spec, std::shared_ptr<Communicator> comm,
       FrozenShards pre_cut)
      : DataParallel(std::move(comm), /*sharded=*/true, model->device()) {
    for (auto& linears : model->NamedLinearsByLayer()) {
      units_.push_back(std::make_unique<FsdpUnit>(std::move(linears), pre_cut, this->comm(),
                                                  spec.reshard_after_forward, spec.cpu_offload));
    }
    TORCH_CHECK(pre_cut.empty(), "fsdp: a frozen shard for '", pre_cut.begin()->first,
                "', which is no decoder projection");
    for (size_t i = 0; i < units_.size(); ++i) {
      units_[i]->Link(i > 0 ? units_[i - 1].get() : nullptr,
                      i + 1 < units_.size() ? units_[i + 1].get() : nullptr);
    }
  }

  std::vector<at::Tensor> Parameters() const override {
    std::vector<at::Tensor> params;
    for (const auto& unit : units_) {
      params.insert(params.end(), unit->lora_shards().begin(), unit->lora_shards().end());
    }
    return params;
  }

  Status FinishBackward() override {
    for (const auto& unit : units_) QLORAD_RETURN_IF_ERROR(unit->FinishBackward());
    // Whole parameters (the classification head) are replicated, not cut into the units.
    return SumGradientsAcrossRanks(WholeTensors());
  }

  Status ForEachAdapterTensor(const TensorWriter& write) override {
    for (const auto& unit : units_) {
      for (size_t k = 0; k < unit->lora_shards().size(); ++k) {
        QLORAD_ASSIGN_OR_RETURN(const at::Tensor full, unit->GatherLoraTensor(k));
        if (comm().rank() != 0) continue;
        QLORAD_RETURN_IF_ERROR(
            write(unit->linears()[unit->lora_linear(k)].first, k % 2 == 0, full));
      }
    }
    return Status::Ok();
  }

  std::vector<ParameterLayout> ParameterLayouts() const override {
    std::vector<ParameterLayout> layouts;
    for (const auto& unit : units_) {
      for (size_t k = 0; k < unit->lora_specs().size(); ++k) {
        layouts.push_back(
            {unit->linears()[unit->lora_linear(k)].first, k % 2 == 0, unit->lora_specs()[k]});
      }
    }
    return layouts;
  }

 private:
  std::vector<std::unique_ptr<FsdpUnit>> units_;
};

}  // namespace

std::unique_ptr<DataParallel> MakeFsdp(LlamaModel& model, const ParallelSpec& spec,
                                       std::shared_ptr<Communicator> comm, FrozenShards pre_cut) {
  return std::make_unique<Fsdp>(model, spec, std::move(comm), std::move(pre_cut));
}

}  // namespace qlorad::trainer::parallel
