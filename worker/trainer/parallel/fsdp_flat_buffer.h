// The bytes of one fsdp unit (a decoder layer, see fsdp.h): what one rank sends in the unit's
// all-gathers, and how the gathered bytes become whole weights again. A rank's part is one flat
// uint8 buffer, so a single collective carries every frozen shard of the layer and, in forward,
// its LoRA shards too. Gathering every rank's part gives [world, bytes]; each piece's columns are
// copied out by one split (split_with_sizes_copy, as FSDP2 unpacks its all-gathers) and viewed as
// the piece's dtype and shape. No communicator here: the unit decides when to gather and moves
// the bytes; this file only knows what they are.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "kernels/torch/nf4_ops.h"
#include "worker/trainer/parallel/shard.h"

namespace qlorad::trainer::parallel {

// What one all-gather of a unit carries.
enum class FsdpGatherContents {
  kFrozen,         // backward's gather: autograd kept the forward's LoRA tensors
  kFrozenAndLora,  // forward's gather: one collective for the whole layer
  kLora,           // the frozen bytes were still gathered (kept from the previous backward)
};

// One rank's part of a gather by byte counts alone: the frozen pieces back to back, then, at the
// next multiple of 8 bytes, the LoRA shards back to back.
struct FsdpByteLayout {
  FsdpByteLayout() = default;
  FsdpByteLayout(std::vector<int64_t> frozen_pieces, std::vector<int64_t> lora_shards);

  // Where `contents` lies in the buffer: `size` bytes from `begin`.
  int64_t begin(FsdpGatherContents contents) const;
  int64_t size(FsdpGatherContents contents) const;
  // Bytes per rank of each range of columns in a gather of `contents`, the sizes that split it.
  // A forward gather has the alignment padding as a column of its own, between the two regions.
  std::vector<int64_t> Columns(FsdpGatherContents contents) const;

  std::vector<int64_t> frozen_pieces;  // bytes of each frozen piece's shard
  std::vector<int64_t> lora_shards;    // bytes of each LoRA shard in the gather dtype
  int64_t frozen_bytes = 0;
  // frozen_bytes rounded up to 8, so the LoRA region can be viewed as any dtype up to 8 bytes.
  int64_t lora_offset = 0;
  int64_t lora_bytes = 0;
};

// One projection's frozen weight, whole again after a gather: views of the columns split out.
struct FsdpUnshardedWeight {
  std::optional<ops::NF4Weight> nf4;  // else `dense`
  at::Tensor dense;
};

// What Unpack reads out of a gather.
struct FsdpUnsharded {
  std::vector<FsdpUnshardedWeight> weights;  // per projection; none from a LoRA-only gather
  std::vector<at::Tensor> lora;              // per LoRA tensor, in the gather dtype, if carried
};

class FsdpFlatBuffer {
 public:
  // `frozen`: each projection's frozen shard, in the unit's order (their bytes are copied in and
  // the shards dropped); `lora_specs`: how every LoRA tensor is split (A then B of each adapted
  // projection), gathered as `lora_dtype`. `options`: where the buffer lives (pinned host memory
  // under CPU offload, so its copies to the device are asynchronous).
  FsdpFlatBuffer(std::vector<FrozenShard> frozen, std::vector<ShardSpec> lora_specs,
                 at::ScalarType lora_dtype, at::TensorOptions options);

  // Copies `shards` (one per LoRA spec) into the LoRA region, cast to the gather dtype. Before
  // each gather that carries them: the optimizer steps the shards in place between gathers.
  void PackLora(const std::vector<at::Tensor>& shards);
  // This rank's part of a gather of `contents`: a view of the buffer.
  at::Tensor Send(FsdpGatherContents contents) const;
  // The weights in `gathered`: every rank's Send(contents), concatenated in rank order.
  FsdpUnsharded Unpack(const at::Tensor& gathered, FsdpGatherContents contents) const;

  const FsdpByteLayout& layout() const { return layout_; }
  const std::vector<ShardSpec>& lora_specs() const { return lora_specs_; }
  at::ScalarType lora_dtype() const { return lora_dtype_; }

 private:
  // One frozen tensor's shard in the buffer; every rank's sits at the same place.
  struct Piece {
    ShardSpec spec;
    at::ScalarType dtype = at::kByte;
  };
  struct Weight {
    std::optional<NF4Shards> nf4;  // else dense rows
    size_t first_piece = 0;        // nf4: packed then absmax; dense: one piece
  };

  std::vector<Weight> weights_;  // per projection
  std::vector<Piece> pieces_;
  std::vector<ShardSpec> lora_specs_;
  at::ScalarType lora_dtype_;
  FsdpByteLayout layout_;
  at::Tensor bytes_;  // uint8 [layout_.lora_offset + layout_.lora_bytes]
};

}  // namespace qlorad::trainer::parallel
