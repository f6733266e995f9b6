#include "worker/trainer/parallel/fsdp.h"

#include <torch/torch.h>

#include <map>
#include <optional>
#include <utility>

#include "worker/trainer/activation_checkpoint.h"
#include "worker/trainer/parallel/shard.h"

namespace qlorad::trainer::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

enum class Phase { kForward, kBackward };

// One frozen tensor inside a unit's byte buffer: every rank's shard of it sits at the same
// place, after the pieces before it.
struct BytePiece {
  ShardSpec spec;
  at::ScalarType dtype = at::kByte;
  int64_t bytes = 0;
};

struct FrozenWeight {
  std::optional<NF4Shards> nf4;  // else dense rows
  size_t first_piece = 0;        // nf4: packed then absmax; dense: one piece
};

class FsdpUnit;
using Units = std::vector<std::unique_ptr<FsdpUnit>>;

// Copies each range of columns of `rows` [world, total] out as its own contiguous [world, size]
// tensor: on CUDA one kernel for all of them (split_with_sizes_copy, as FSDP2 unpacks its
// all-gathers), not one copy per tensor.
std::vector<at::Tensor> SplitColumns(const at::Tensor& rows, const std::vector<int64_t>& sizes) {
  std::vector<at::Tensor> columns;
  for (const int64_t size : sizes)
    columns.push_back(at::empty({rows.size(0), size}, rows.options()));
  at::split_with_sizes_copy_out(columns, rows, sizes, /*dim=*/1);
  return columns;
}

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
  // Takes each projection's entry out of `pre_cut`, if there, else cuts the layer's own weight.
  FsdpUnit(const Units& all, size_t index, std::vector<std::pair<std::string, QLoraLinear>> linears,
           FrozenShards& pre_cut, Communicator& comm, bool reshard_after_forward, bool cpu_offload);

  const std::vector<at::Tensor>& lora_shards() const { return lora_shards_; }
  const std::vector<ShardSpec>& lora_specs() const { return lora_specs_; }
  const std::vector<std::pair<std::string, QLoraLinear>>& linears() const { return linears_; }

  // The projection hooks (see ExternalWeights).
  at::Tensor BaseForward(size_t linear, const at::Tensor& x);
  std::pair<at::Tensor, at::Tensor> Lora(size_t linear) const;

  // For the autograd functions below.
  at::Tensor FullWeight(size_t linear, at::ScalarType dtype, Phase phase);
  variable_list GatherLora();
  void ReduceScatterLoraGrads(const variable_list& grads);
  // Waits for this step's reduce-scatters and adds their sums into the shards' .grad.
  Status AccumulateLoraGrads();

  // The full value of LoRA tensor `k` (2m: A of the m-th adapted projection, 2m + 1: its B).
  StatusOr<at::Tensor> GatherLoraTensor(size_t k);
  size_t lora_linear(size_t k) const { return lora_owner_[k]; }

  void Free();
  void ReleaseLora() { lora_full_.clear(); }

 private:
  void AddPiece(const at::Tensor& shard, const ShardSpec& spec, std::vector<at::Tensor>* local);
  // Starts the all-gather of the frozen shards unless they are gathered or on their way; a
  // forward gather carries the LoRA shards in the same collective (backward has its LoRA saved).
  void StartGather(Phase phase);
  // Finishes it (starting it first if needed) and unshards every weight.
  void Gather(Phase phase);
  // Backward reached this unit, so every later one is done: at most two stay unsharded, this one
  // and the previous one's prefetch.
  void FreeLaterUnits() const {
    for (size_t j = index_ + 1; j < all_.size(); ++j) all_[j]->Free();
  }
  // Starts the gather of the unit at `index` (forward: the next one; backward: the previous;
  // index_ - 1 of unit 0 wraps around and is ignored).
  void Prefetch(size_t index, Phase phase) const {
    if (index < all_.size()) all_[index]->StartGather(phase);
  }
  // Copies the LoRA shards, in the gather dtype, behind the frozen bytes of the send buffer.
  void PackLora();
  // `t` where the collectives run: offloaded state is copied up (asynchronously from pinned
  // memory, ordered before the collective on the current stream).
  at::Tensor OnDevice(const at::Tensor& t) const {
    return offload_ ? t.to(device_, /*non_blocking=*/true) : t;
  }
  // The gathered LoRA tensors from `columns[first...]`, each [world, that shard's bytes].
  variable_list UnpackLora(const std::vector<at::Tensor>& columns, size_t first) const;

  const Units& all_;
  size_t index_;
  std::vector<std::pair<std::string, QLoraLinear>> linears_;
  Communicator& comm_;
  bool reshard_after_forward_;
  at::Device device_{at::kCPU};  // where the layer computes and the collectives run
  // Sharded state (send_, the LoRA shards, their gradients and so AdamW's state) lives in host
  // memory; gathers stage through the device and reduced gradients come back to the host.
  bool offload_ = false;

  std::vector<FrozenWeight> frozen_;                // per linear
  std::vector<FrozenWeightSource> weight_sources_;  // per linear: FullWeight, for FrozenLinear
  std::vector<BytePiece> pieces_;
  // uint8, this rank's part of a gather: the shard of every frozen piece back to back
  // (frozen_bytes_), then, padded to 8 bytes, every LoRA shard in lora_dtype_ (lora_bytes_).
  at::Tensor send_;
  int64_t frozen_bytes_ = 0;
  int64_t lora_offset_ = 0;
  int64_t lora_bytes_ = 0;
  // Bytes per rank of each range of columns of a gather, for SplitColumns.
  std::vector<int64_t> frozen_columns_;   // the frozen pieces (a backward gather)
  std::vector<int64_t> lora_columns_;     // each LoRA shard in lora_dtype_ (a LoRA-only gather)
  std::vector<int64_t> forward_columns_;  // frozen_columns_, the alignment padding, lora_columns_

  std::vector<at::Tensor> lora_shards_;  // fp32 leaves [rows_per_rank * unit]
  std::vector<ShardSpec> lora_specs_;
  std::vector<size_t> lora_owner_;              // lora tensor -> linear
  std::vector<std::optional<size_t>> lora_of_;  // linear -> first of its two lora tensors
  at::ScalarType lora_dtype_;                   // gathered in the adapters' compute dtype

  // Unsharded state.
  at::Tensor in_transit_;  // [world * row bytes]: a started all-gather's output
  std::unique_ptr<Work> transit_;
  bool transit_has_lora_ = false;
  bool gathered_ = false;
  std::vector<std::optional<ops::NF4Weight>> full_nf4_;
  std::vector<at::Tensor> full_dense_;
  variable_list gathered_lora_;  // from a forward gather, until LoraGather takes it
  variable_list lora_full_;      // this forward's gathered A and B, outputs of LoraGather
  size_t forward_uses_ = 0;

  // Gradient reduce-scatters in flight: nothing waits on them until the step's last backward is
  // done, so a layer's backward never stalls on its own gradients' collective.
  struct PendingReduce {
    std::unique_ptr<Work> work;
    at::Tensor input;   // kept alive until the collective is done
    at::Tensor output;  // this rank's fp32 sums, every LoRA shard back to back
  };
  std::vector<PendingReduce> pending_reduces_;
};

// Full LoRA tensors from the local shards (all-gathered with the unit's frozen bytes). Backward
// starts the reduce-scatter of their gradients and returns none: the unit adds the reduced sums
// into the shards' .grad once the step's backward is over (FinishBackward).
struct LoraGather : torch::autograd::Function<LoraGather> {
  static variable_list forward(AutogradContext* ctx, at::TensorList shards, FsdpUnit* unit) {
    SavePointer(ctx, "unit", unit);
    TORCH_CHECK(shards.size() == unit->lora_shards().size(), "LoraGather: another unit's shards");
    return unit->GatherLora();  // one full tensor per shard
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    LoadPointer<FsdpUnit>(ctx, "unit")->ReduceScatterLoraGrads(grads);
    return variable_list(grads.size() + 1);  // none for the shards (one per output); the pointer
  }
};

FsdpUnit::FsdpUnit(const Units& all, size_t index,
                   std::vector<std::pair<std::string, QLoraLinear>> linears, FrozenShards& pre_cut,
                   Communicator& comm, bool reshard_after_forward, bool cpu_offload)
    : all_(all),
      index_(index),
      linears_(std::move(linears)),
      comm_(comm),
      reshard_after_forward_(reshard_after_forward),
      lora_dtype_(at::kFloat) {
  const int world = comm_.world_size();
  const int rank = comm_.rank();
  const QLoraLinearImpl& first = *linears_.front().second;
  device_ =
      first.nf4_weight() ? first.nf4_weight()->packed.device() : first.dense_weight().device();
  offload_ = cpu_offload && device_.is_cuda();  // on a CPU run everything is in host memory
  std::vector<at::Tensor> local;
  lora_of_.resize(linears_.size());
  for (size_t i = 0; i < linears_.size(); ++i) {
    QLoraLinearImpl& layer = *linears_[i].second;
    // Cut by a sharded load (the layer then holds a placeholder), or here from the whole weight.
    FrozenShard frozen;
    if (auto it = pre_cut.find(linears_[i].first); it != pre_cut.end()) {
      frozen = std::move(it->second);
      pre_cut.erase(it);
    } else if (const auto& nf4 = layer.nf4_weight()) {
      frozen = ShardNF4Weight(*nf4, rank, world);
    } else {
      frozen = ShardDenseWeight(layer.dense_weight(), rank, world);
    }
    TORCH_CHECK(frozen.nf4.has_value() == layer.quantized(), linears_[i].first,
                ": the frozen shard's form (NF4 or dense) differs from the layer's");
    frozen_.push_back({std::move(frozen.nf4), pieces_.size()});
    for (const FrozenShard::Piece& piece : frozen.pieces) AddPiece(piece.local, piece.spec, &local);
    if (layer.has_lora()) {
      lora_dtype_ = layer.lora_options().compute_dtype;  // one LoraOptions for every projection
      lora_of_[i] = lora_shards_.size();
      for (const at::Tensor& full : {layer.lora_a(), layer.lora_b()}) {
        // A [r, in] and B [out, r] split on their rows.
        const ShardSpec spec = MakeShardSpec(full, full.size(1), world);
        at::Tensor shard = ShardOf(full.detach(), spec, rank);
        if (offload_) shard = shard.to(at::kCPU);
        lora_shards_.push_back(shard.requires_grad_(true));
        lora_specs_.push_back(spec);
        lora_owner_.push_back(i);
      }
    }
  }
  lora_offset_ = (frozen_bytes_ + 7) / 8 * 8;  // so the LoRA region can be viewed as its dtype
  for (const BytePiece& piece : pieces_) frozen_columns_.push_back(piece.bytes);
  for (const ShardSpec& spec : lora_specs_) {
    lora_columns_.push_back(spec.shard_numel() *
                            static_cast<int64_t>(c10::elementSize(lora_dtype_)));
    lora_bytes_ += lora_columns_.back();
  }
  forward_columns_ = frozen_columns_;
  forward_columns_.push_back(lora_offset_ - frozen_bytes_);
  forward_columns_.insert(forward_columns_.end(), lora_columns_.begin(), lora_columns_.end());
  // Pinned when offloaded, so each gather's copy to the device is asynchronous.
  send_ = at::zeros(
      {lora_offset_ + lora_bytes_},
      local.front().options().device(offload_ ? at::kCPU : device_).pinned_memory(offload_));
  send_.narrow(0, 0, frozen_bytes_).copy_(at::cat(local));
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
  BytePiece piece{spec, shard.scalar_type(), shard.numel() * shard.element_size()};
  frozen_bytes_ += piece.bytes;
  pieces_.push_back(piece);
  local->push_back(shard.view(at::kByte));
}

at::Tensor FsdpUnit::BaseForward(size_t linear, const at::Tensor& x) {
  // A checkpointed layer running again in backward (activation_checkpoint.h): its graph's
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
    Prefetch(recompute ? index_ - 1 : index_ + 1, Phase::kForward);
    if (!lora_shards_.empty()) {
      lora_full_ = LoraGather::apply(at::TensorList(lora_shards_), this);
    }
  }
  // Saves no weight: backward gathers the frozen shards again (FullWeight in backward).
  at::Tensor y = FrozenLinear(x, weight_sources_[linear]);
  if (++forward_uses_ == linears_.size()) {  // the layer's last projection has run
    forward_uses_ = 0;
    // The last unit stays: backward starts with it (as FSDP2 keeps the root's last layer). A
    // recomputed unit stays too: the backward that follows uses it.
    if (reshard_after_forward_ && index_ + 1 != all_.size() && !recompute) Free();
  }
  return y;
}

std::pair<at::Tensor, at::Tensor> FsdpUnit::Lora(size_t linear) const {
  const size_t k = *lora_of_[linear];
  return {lora_full_.at(k), lora_full_.at(k + 1)};
}

at::Tensor FsdpUnit::FullWeight(size_t linear, at::ScalarType dtype, Phase phase) {
  if (phase == Phase::kBackward) {
    FreeLaterUnits();
    StartGather(phase);
    Prefetch(index_ - 1, phase);
  }
  if (!gathered_) Gather(phase);
  if (const auto& nf4 = full_nf4_[linear]) return ops::DequantizeNF4(*nf4, dtype);
  return full_dense_[linear].to(dtype);
}

void FsdpUnit::PackLora() {
  if (lora_shards_.empty()) return;
  std::vector<at::Tensor> flat;
  for (const at::Tensor& shard : lora_shards_) flat.push_back(shard.detach());
  send_.narrow(0, lora_offset_, lora_bytes_).view(lora_dtype_).copy_(at::cat(flat));
}

void FsdpUnit::StartGather(Phase phase) {
  if (gathered_ || transit_) return;
  transit_has_lora_ = phase == Phase::kForward && !lora_shards_.empty();
  if (transit_has_lora_) PackLora();
  at::Tensor send = OnDevice(send_.narrow(0, 0, transit_has_lora_ ? send_.numel() : frozen_bytes_));
  in_transit_ = at::empty({comm_.world_size() * send.numel()}, send.options());
  transit_ = comm_.AllGather(in_transit_, send);
}

void FsdpUnit::Gather(Phase phase) {
  StartGather(phase);
  WaitOrThrow(std::move(transit_));
  const at::Tensor rows = in_transit_.view({comm_.world_size(), -1});
  in_transit_ = at::Tensor();
  const std::vector<at::Tensor> columns =
      SplitColumns(rows, transit_has_lora_ ? forward_columns_ : frozen_columns_);
  std::vector<at::Tensor> full;
  for (size_t p = 0; p < pieces_.size(); ++p) {
    full.push_back(Unshard(columns[p].view(pieces_[p].dtype), pieces_[p].spec));
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
  if (transit_has_lora_) gathered_lora_ = UnpackLora(columns, pieces_.size() + 1);
  gathered_ = true;
}

void FsdpUnit::Free() {
  if (!gathered_) return;
  full_nf4_.clear();
  full_dense_.clear();
  gathered_lora_.clear();
  gathered_ = false;
}

variable_list FsdpUnit::UnpackLora(const std::vector<at::Tensor>& columns, size_t first) const {
  variable_list full;
  for (size_t k = 0; k < lora_specs_.size(); ++k) {
    full.push_back(Unshard(columns[first + k].view(lora_dtype_), lora_specs_[k]));
  }
  return full;
}

variable_list FsdpUnit::GatherLora() {
  if (!gathered_) Gather(Phase::kForward);
  if (!gathered_lora_.empty()) return std::exchange(gathered_lora_, {});
  // The frozen bytes were already here (kept from the previous micro-batch's backward), so the
  // LoRA shards travel alone.
  PackLora();
  at::Tensor send = OnDevice(send_.narrow(0, lora_offset_, lora_bytes_));
  at::Tensor out = at::empty({comm_.world_size() * lora_bytes_}, send.options());
  WaitOrThrow(comm_.AllGather(out, send));
  return UnpackLora(SplitColumns(out.view({comm_.world_size(), -1}), lora_columns_), 0);
}

void FsdpUnit::ReduceScatterLoraGrads(const variable_list& grads) {
  // Each gradient as its rows, padded to whole shards and laid out rank-major ([world, per rank]:
  // rank r's slice holds its rows of every tensor) by one _chunk_cat, as FSDP2 packs its
  // reduce-scatter input. Padding rows get zero gradient and stay zero under AdamW.
  std::vector<at::Tensor> rows;
  for (size_t i = 0; i < lora_specs_.size(); ++i) {
    const ShardSpec& spec = lora_specs_[i];
    const at::Tensor grad =
        grads[i].defined() ? grads[i]
                           : at::zeros(spec.shape, at::TensorOptions(device_).dtype(lora_dtype_));
    rows.push_back(grad.reshape({spec.rows, spec.unit}));
  }
  // The reduction is fp32 whatever the gather dtype.
  at::Tensor input = at::_chunk_cat(rows, /*dim=*/0, comm_.world_size()).to(at::kFloat);
  at::Tensor flat = input.view({-1});
  at::Tensor output = at::empty({input.size(1)}, input.options());
  pending_reduces_.push_back({comm_.ReduceScatterSum(output, flat), input, output});
}

Status FsdpUnit::AccumulateLoraGrads() {
  std::vector<int64_t> sizes;
  for (const ShardSpec& spec : lora_specs_) sizes.push_back(spec.shard_numel());
  for (PendingReduce& reduce : pending_reduces_) {
    QLORAD_RETURN_IF_ERROR(reduce.work->Wait());
    // Separate tensors, not views of the output: the optimizer's zero_grad detaches them.
    std::vector<at::Tensor> sums =
        at::split_with_sizes_copy(offload_ ? reduce.output.to(at::kCPU) : reduce.output, sizes);
    std::vector<at::Tensor> grads, addends;
    for (size_t i = 0; i < lora_specs_.size(); ++i) {
      at::Tensor& grad = lora_shards_[i].mutable_grad();
      if (grad.defined()) {
        grads.push_back(grad);
        addends.push_back(sums[i]);
      } else {
        grad = std::move(sums[i]);
      }
    }
    if (!grads.empty()) at::_foreach_add_(grads, addends);
  }
  pending_reduces_.clear();
  return Status::Ok();
}

StatusOr<at::Tensor> FsdpUnit::GatherLoraTensor(size_t k) {
  const ShardSpec& spec = lora_specs_[k];
  at::Tensor local = OnDevice(lora_shards_[k].detach());
  at::Tensor out = at::empty({comm_.world_size() * spec.shard_numel()}, local.options());
  QLORAD_RETURN_IF_ERROR(comm_.AllGather(out, local)->Wait());
  return Unshard(out, spec);
}

class Fsdp : public DataParallel {
 public:
  Fsdp(LlamaModel& model, const ParallelSpec& spec, std::shared_ptr<Communicator> comm,
       FrozenShards pre_cut)
      : DataParallel(std::move(comm), /*sharded=*/true, model->device()) {
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
                                                  pre_cut, this->comm(), spec.reshard_after_forward,
                                                  spec.cpu_offload));
    }
    TORCH_CHECK(pre_cut.empty(), "fsdp: a frozen shard for '", pre_cut.begin()->first,
                "', which is no decoder projection");
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
      QLORAD_RETURN_IF_ERROR(unit->AccumulateLoraGrads());
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
                                       std::shared_ptr<Communicator> comm, FrozenShards pre_cut) {
  return std::make_unique<Fsdp>(model, spec, std::move(comm), std::move(pre_cut));
}

}  // namespace qlorad::trainer::parallel
