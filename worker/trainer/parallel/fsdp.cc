#include "worker/trainer/parallel/fsdp.h"

#include <torch/torch.h>

#include <map>
#include <optional>

#include "worker/trainer/parallel/shard.h"

namespace qlorad::trainer::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

enum class Phase { kForward, kBackward };

// One frozen tensor inside a unit's byte buffer: every rank's shard of it sits at the same offset.
struct BytePiece {
  ShardSpec spec;
  at::ScalarType dtype = at::kByte;
  int64_t offset = 0;  // bytes into one rank's buffer
  int64_t bytes = 0;
};

struct FrozenWeight {
  std::optional<NF4Shards> nf4;  // else dense rows
  size_t first_piece = 0;        // nf4: packed then absmax; dense: one piece
};

class FsdpUnit;
using Units = std::vector<std::unique_ptr<FsdpUnit>>;

// Saves a pointer in an autograd context: the unit outlives every graph built through it.
template <typename T>
void SavePointer(AutogradContext* ctx, const char* key, T* p) {
  ctx->saved_data[key] = static_cast<int64_t>(reinterpret_cast<intptr_t>(p));
}
template <typename T>
T* LoadPointer(AutogradContext* ctx, const char* key) {
  return reinterpret_cast<T*>(static_cast<intptr_t>(ctx->saved_data[key].toInt()));
}

class FsdpUnit {
 public:
  FsdpUnit(const Units& all, size_t index, std::vector<std::pair<std::string, QLoraLinear>> linears,
           Communicator& comm, bool reshard_after_forward);

  const std::vector<at::Tensor>& lora_shards() const { return lora_shards_; }
  const std::vector<ShardSpec>& lora_specs() const { return lora_specs_; }
  const std::vector<std::pair<std::string, QLoraLinear>>& linears() const { return linears_; }

  // The projection hooks (see ExternalWeights).
  at::Tensor BaseForward(size_t linear, const at::Tensor& x);
  std::pair<at::Tensor, at::Tensor> Lora(size_t linear) const;

  // For the autograd functions below.
  at::Tensor FullWeight(size_t linear, at::ScalarType dtype, Phase phase);
  variable_list GatherLora(at::TensorList shards);
  variable_list ReduceScatterLoraGrads(const variable_list& grads);

  // The full value of LoRA tensor `k` (2m: A of the m-th adapted projection, 2m + 1: its B).
  StatusOr<at::Tensor> GatherLoraTensor(size_t k);
  size_t lora_linear(size_t k) const { return lora_owner_[k]; }

  void Free();
  void ReleaseLora() { lora_full_.clear(); }

 private:
  void AddPiece(const at::Tensor& shard, const ShardSpec& spec, std::vector<at::Tensor>* local);
  // Starts the all-gather of the frozen shards unless they are gathered or on their way.
  void StartGather();
  // Finishes it (starting it first if needed) and unshards every weight.
  void Gather();
  // Starts the gather of the unit at `index` (forward: the next one; backward: the previous).
  void Prefetch(size_t index) const {
    if (index < all_.size()) all_[index]->StartGather();
  }

  const Units& all_;
  size_t index_;
  std::vector<std::pair<std::string, QLoraLinear>> linears_;
  Communicator& comm_;
  bool reshard_after_forward_;

  std::vector<FrozenWeight> frozen_;                // per linear
  std::vector<FrozenWeightSource> weight_sources_;  // per linear: FullWeight, for FrozenLinear
  std::vector<BytePiece> pieces_;
  at::Tensor frozen_local_;  // uint8: this rank's shard of every piece, back to back
  int64_t frozen_bytes_ = 0;

  std::vector<at::Tensor> lora_shards_;  // fp32 leaves [rows_per_rank * unit]
  std::vector<ShardSpec> lora_specs_;
  std::vector<size_t> lora_owner_;              // lora tensor -> linear
  std::vector<std::optional<size_t>> lora_of_;  // linear -> first of its two lora tensors

  // Unsharded state.
  at::Tensor in_transit_;  // [world * frozen_bytes_]: a started all-gather's output
  std::unique_ptr<Work> transit_;
  bool gathered_ = false;
  std::vector<std::optional<ops::NF4Weight>> full_nf4_;
  std::vector<at::Tensor> full_dense_;
  variable_list lora_full_;  // this forward's gathered A and B, outputs of LoraGather
  size_t forward_uses_ = 0;
};

// Full LoRA tensors from the local shards (all-gather); backward reduce-scatters their gradients.
struct LoraGather : torch::autograd::Function<LoraGather> {
  static variable_list forward(AutogradContext* ctx, at::TensorList shards, FsdpUnit* unit) {
    SavePointer(ctx, "unit", unit);
    return unit->GatherLora(shards);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out = LoadPointer<FsdpUnit>(ctx, "unit")->ReduceScatterLoraGrads(grads);
    out.emplace_back();  // the unit pointer
    return out;
  }
};

FsdpUnit::FsdpUnit(const Units& all, size_t index,
                   std::vector<std::pair<std::string, QLoraLinear>> linears, Communicator& comm,
                   bool reshard_after_forward)
    : all_(all),
      index_(index),
      linears_(std::move(linears)),
      comm_(comm),
      reshard_after_forward_(reshard_after_forward) {
  const int world = comm_.world_size();
  const int rank = comm_.rank();
  std::vector<at::Tensor> local;
  lora_of_.resize(linears_.size());
  for (size_t i = 0; i < linears_.size(); ++i) {
    QLoraLinearImpl& layer = *linears_[i].second;
    FrozenWeight frozen;
    frozen.first_piece = pieces_.size();
    if (const auto& nf4 = layer.nf4_weight()) {
      frozen.nf4 = MakeNF4Shards(*nf4, world);
      const auto [packed, absmax] = NF4ShardOf(*nf4, *frozen.nf4, rank);
      AddPiece(packed, frozen.nf4->packed, &local);
      AddPiece(absmax, frozen.nf4->absmax, &local);
    } else {
      const at::Tensor& dense = layer.dense_weight();
      const ShardSpec spec = MakeShardSpec(dense, layer.in_features(), world);
      AddPiece(ShardOf(dense, spec, rank), spec, &local);
    }
    frozen_.push_back(std::move(frozen));
    if (layer.has_lora()) {
      lora_of_[i] = lora_shards_.size();
      for (const at::Tensor& full : {layer.lora_a(), layer.lora_b()}) {
        // A [r, in] and B [out, r] split on their rows.
        const ShardSpec spec = MakeShardSpec(full, full.size(1), world);
        lora_shards_.push_back(ShardOf(full.detach(), spec, rank).requires_grad_(true));
        lora_specs_.push_back(spec);
        lora_owner_.push_back(i);
      }
    }
  }
  frozen_local_ = at::cat(local);
  frozen_bytes_ = frozen_local_.numel();
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

void FsdpUnit::AddPiece(const at::Tensor& shard, const ShardSpec& spec,
                        std::vector<at::Tensor>* local) {
  BytePiece piece{spec, shard.scalar_type(), frozen_bytes_, shard.numel() * shard.element_size()};
  frozen_bytes_ += piece.bytes;
  pieces_.push_back(piece);
  local->push_back(shard.view(at::kByte));
}

at::Tensor FsdpUnit::BaseForward(size_t linear, const at::Tensor& x) {
  if (forward_uses_ == 0) {
    if (!lora_shards_.empty()) {
      lora_full_ = LoraGather::apply(at::TensorList(lora_shards_), this);
    }
    StartGather();
    Prefetch(index_ + 1);
  }
  // Saves no weight: backward gathers the frozen shards again (FullWeight in backward).
  at::Tensor y = FrozenLinear(x, weight_sources_[linear]);
  if (++forward_uses_ == linears_.size()) {  // the layer's last projection has run
    forward_uses_ = 0;
    if (reshard_after_forward_) Free();
  }
  return y;
}

std::pair<at::Tensor, at::Tensor> FsdpUnit::Lora(size_t linear) const {
  const size_t k = *lora_of_[linear];
  return {lora_full_.at(k), lora_full_.at(k + 1)};
}

at::Tensor FsdpUnit::FullWeight(size_t linear, at::ScalarType dtype, Phase phase) {
  if (phase == Phase::kBackward) {
    // Backward reached this layer, so every later layer is done: at most two stay unsharded.
    for (size_t j = index_ + 1; j < all_.size(); ++j) all_[j]->Free();
    if (!gathered_) {
      StartGather();
      Prefetch(index_ - 1);  // index_ 0: size_t wraps, and Prefetch ignores it
    }
  }
  if (!gathered_) Gather();
  if (const auto& nf4 = full_nf4_[linear]) return ops::DequantizeNF4(*nf4, dtype);
  return full_dense_[linear].to(dtype);
}

void FsdpUnit::StartGather() {
  if (gathered_ || transit_) return;
  in_transit_ = at::empty({comm_.world_size() * frozen_bytes_}, frozen_local_.options());
  transit_ = comm_.AllGather(in_transit_, frozen_local_);
}

void FsdpUnit::Gather() {
  StartGather();
  WaitOrThrow(std::move(transit_));
  const at::Tensor rows = in_transit_.view({comm_.world_size(), frozen_bytes_});
  in_transit_ = at::Tensor();
  std::vector<at::Tensor> full;
  for (const BytePiece& piece : pieces_) {
    const at::Tensor bytes =
        rows.narrow(1, piece.offset, piece.bytes).clone(at::MemoryFormat::Contiguous);
    full.push_back(Unshard(bytes.view(piece.dtype), piece.spec));
  }
  full_nf4_.assign(linears_.size(), std::nullopt);
  full_dense_.assign(linears_.size(), at::Tensor());
  for (size_t i = 0; i < linears_.size(); ++i) {
    const FrozenWeight& frozen = frozen_[i];
    if (frozen.nf4) {
      full_nf4_[i] =
          UnshardNF4(*frozen.nf4, full[frozen.first_piece], full[frozen.first_piece + 1]);
    } else {
      full_dense_[i] = full[frozen.first_piece];
    }
  }
  gathered_ = true;
}

void FsdpUnit::Free() {
  if (!gathered_) return;
  full_nf4_.clear();
  full_dense_.clear();
  gathered_ = false;
}

variable_list FsdpUnit::GatherLora(at::TensorList shards) {
  const int64_t world = comm_.world_size();
  // fp32, not the activation dtype: the projections compute LoRA in fp32 (as single and ddp do),
  // and LoRA is under 3% of a layer's gathered bytes next to its packed NF4 weights.
  at::Tensor local = at::cat(shards);
  const int64_t per_rank = local.numel();
  at::Tensor out = at::empty({world * per_rank}, local.options());
  WaitOrThrow(comm_.AllGather(out, local));
  const at::Tensor rows = out.view({world, per_rank});
  variable_list full;
  int64_t offset = 0;
  for (const ShardSpec& spec : lora_specs_) {
    const at::Tensor part =
        rows.narrow(1, offset, spec.shard_numel()).clone(at::MemoryFormat::Contiguous);
    full.push_back(Unshard(part, spec));
    offset += spec.shard_numel();
  }
  return full;
}

variable_list FsdpUnit::ReduceScatterLoraGrads(const variable_list& grads) {
  const int64_t world = comm_.world_size();
  std::vector<at::Tensor> parts;
  for (size_t i = 0; i < lora_specs_.size(); ++i) {
    const ShardSpec& spec = lora_specs_[i];
    // Padded to whole shards; the padding rows get zero gradient and stay zero under AdamW.
    at::Tensor padded = at::zeros({world * spec.shard_numel()}, lora_shards_[i].options());
    if (grads[i].defined()) padded.narrow(0, 0, spec.numel).copy_(grads[i].reshape({-1}));
    parts.push_back(padded.view({world, spec.shard_numel()}));
  }
  at::Tensor input = at::cat(parts, 1).reshape({-1});  // rank-major: rank r's slice is its shards
  at::Tensor out = at::empty({input.numel() / world}, input.options());
  WaitOrThrow(comm_.ReduceScatterSum(out, input));
  variable_list shard_grads;
  int64_t offset = 0;
  for (const ShardSpec& spec : lora_specs_) {
    shard_grads.push_back(out.narrow(0, offset, spec.shard_numel()).clone());
    offset += spec.shard_numel();
  }
  return shard_grads;
}

StatusOr<at::Tensor> FsdpUnit::GatherLoraTensor(size_t k) {
  const ShardSpec& spec = lora_specs_[k];
  at::Tensor local = lora_shards_[k].detach();
  at::Tensor out = at::empty({comm_.world_size() * spec.shard_numel()}, local.options());
  QLORAD_RETURN_IF_ERROR(comm_.AllGather(out, local)->Wait());
  return Unshard(out, spec);
}

class Fsdp : public DataParallel {
 public:
  Fsdp(LlamaModel& model, const ParallelSpec& spec, std::shared_ptr<Communicator> comm)
      : DataParallel(std::move(comm), /*sharded=*/true) {
    // Group the projections by decoder layer ("model.layers.<i>.").
    std::map<int64_t, std::vector<std::pair<std::string, QLoraLinear>>> layers;
    for (auto& [name, linear] : model->NamedLinears()) {
      const std::string prefix = "model.layers.";
      const size_t end = name.find('.', prefix.size());
      layers[std::stoll(name.substr(prefix.size(), end - prefix.size()))].emplace_back(name,
                                                                                       linear);
    }
    for (auto& [index, linears] : layers) {
      units_.push_back(std::make_unique<FsdpUnit>(units_, units_.size(), std::move(linears),
                                                  this->comm(), spec.reshard_after_forward));
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
    for (const auto& unit : units_) {
      unit->Free();
      unit->ReleaseLora();
    }
    return Status::Ok();
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
  Units units_;
};

}  // namespace

std::unique_ptr<DataParallel> MakeFsdp(LlamaModel& model, const ParallelSpec& spec,
                                       std::shared_ptr<Communicator> comm) {
  return std::make_unique<Fsdp>(model, spec, std::move(comm));
}

}  // namespace qlorad::trainer::parallel
