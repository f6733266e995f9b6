#include "worker/trainer/parallel/fsdp_flat_buffer.h"

#include <c10/util/Exception.h>

#include <numeric>
#include <utility>

namespace qlorad::trainer::parallel {

namespace {

// Copies each range of columns of `rows` [world, total] out as its own contiguous [world, size]
// tensor: on CUDA one kernel for all of them, not one copy per tensor.
std::vector<at::Tensor> SplitColumns(const at::Tensor& rows, const std::vector<int64_t>& sizes) {
  std::vector<at::Tensor> columns;
  for (const int64_t size : sizes)
    columns.push_back(at::empty({rows.size(0), size}, rows.options()));
  at::split_with_sizes_copy_out(columns, rows, sizes, /*dim=*/1);
  return columns;
}

}  // namespace

FsdpByteLayout::FsdpByteLayout(std::vector<int64_t> frozen_pieces_bytes,
                               std::vector<int64_t> lora_shards_bytes)
    : frozen_pieces(std::move(frozen_pieces_bytes)), lora_shards(std::move(lora_shards_bytes)) {
  frozen_bytes = std::accumulate(frozen_pieces.begin(), frozen_pieces.end(), int64_t{0});
  lora_offset = (frozen_bytes + 7) / 8 * 8;
  lora_bytes = std::accumulate(lora_shards.begin(), lora_shards.end(), int64_t{0});
}

int64_t FsdpByteLayout::begin(FsdpGatherContents contents) const {
  return contents == FsdpGatherContents::kLora ? lora_offset : 0;
}

int64_t FsdpByteLayout::size(FsdpGatherContents contents) const {
  switch (contents) {
    case FsdpGatherContents::kFrozen:
      return frozen_bytes;
    case FsdpGatherContents::kFrozenAndLora:
      return lora_offset + lora_bytes;
    case FsdpGatherContents::kLora:
      return lora_bytes;
  }
  TORCH_CHECK(false, "FsdpByteLayout: unknown gather contents");
}

std::vector<int64_t> FsdpByteLayout::Columns(FsdpGatherContents contents) const {
  switch (contents) {
    case FsdpGatherContents::kFrozen:
      return frozen_pieces;
    case FsdpGatherContents::kFrozenAndLora: {
      std::vector<int64_t> columns = frozen_pieces;
      columns.push_back(lora_offset - frozen_bytes);
      columns.insert(columns.end(), lora_shards.begin(), lora_shards.end());
      return columns;
    }
    case FsdpGatherContents::kLora:
      return lora_shards;
  }
  TORCH_CHECK(false, "FsdpByteLayout: unknown gather contents");
}

FsdpFlatBuffer::FsdpFlatBuffer(std::vector<FrozenShard> frozen, std::vector<ShardSpec> lora_specs,
                               at::ScalarType lora_dtype, at::TensorOptions options)
    : lora_specs_(std::move(lora_specs)), lora_dtype_(lora_dtype) {
  std::vector<at::Tensor> local;  // every piece's shard as bytes, in buffer order
  std::vector<int64_t> piece_bytes;
  for (FrozenShard& shard : frozen) {
    weights_.push_back({std::move(shard.nf4), pieces_.size()});
    for (const FrozenShard::Piece& piece : shard.pieces) {
      pieces_.push_back({piece.spec, piece.local.scalar_type()});
      piece_bytes.push_back(piece.local.numel() * piece.local.element_size());
      local.push_back(piece.local.view(at::kByte));
    }
  }
  std::vector<int64_t> lora_bytes;
  for (const ShardSpec& spec : lora_specs_) {
    lora_bytes.push_back(spec.shard_numel() * static_cast<int64_t>(c10::elementSize(lora_dtype_)));
  }
  layout_ = FsdpByteLayout(std::move(piece_bytes), std::move(lora_bytes));
  bytes_ = at::zeros({layout_.lora_offset + layout_.lora_bytes}, options.dtype(at::kByte));
  bytes_.narrow(0, 0, layout_.frozen_bytes).copy_(at::cat(local));
}

void FsdpFlatBuffer::PackLora(const std::vector<at::Tensor>& shards) {
  if (shards.empty()) return;
  TORCH_CHECK(shards.size() == lora_specs_.size(), "FsdpFlatBuffer: ", shards.size(),
              " LoRA shards for ", lora_specs_.size(), " specs");
  std::vector<at::Tensor> flat;
  for (const at::Tensor& shard : shards) flat.push_back(shard.detach());
  bytes_.narrow(0, layout_.lora_offset, layout_.lora_bytes).view(lora_dtype_).copy_(at::cat(flat));
}

at::Tensor FsdpFlatBuffer::Send(FsdpGatherContents contents) const {
  return bytes_.narrow(0, layout_.begin(contents), layout_.size(contents));
}

FsdpUnsharded FsdpFlatBuffer::Unpack(const at::Tensor& gathered,
                                     FsdpGatherContents contents) const {
  const int64_t per_rank = layout_.size(contents);
  TORCH_CHECK(per_rank > 0 && gathered.numel() % per_rank == 0,
              "FsdpFlatBuffer: ", gathered.numel(), " gathered bytes are not whole parts of ",
              per_rank);
  const std::vector<at::Tensor> columns = SplitColumns(
      gathered.view({gathered.numel() / per_rank, per_rank}), layout_.Columns(contents));
  FsdpUnsharded out;
  size_t column = 0;
  if (contents != FsdpGatherContents::kLora) {
    // Each piece as gathered (every rank's shard, padding included), unsharded once: by
    // UnshardNF4 for an NF4 weight's two pieces, by Unshard for a dense one. Unsharding the NF4
    // pieces first, as fsdp.cc once did, left UnshardNF4 no whole shards to drop the padding of
    // unless the world size divides the block count (3 ranks failed on the tiny model).
    std::vector<at::Tensor> gathered_pieces;
    for (const Piece& piece : pieces_)
      gathered_pieces.push_back(columns[column++].view(piece.dtype));
    for (const Weight& weight : weights_) {
      FsdpUnshardedWeight& unsharded = out.weights.emplace_back();
      if (weight.nf4) {
        unsharded.nf4 = UnshardNF4(*weight.nf4, gathered_pieces[weight.first_piece],
                                   gathered_pieces[weight.first_piece + 1]);
      } else {
        unsharded.dense =
            Unshard(gathered_pieces[weight.first_piece], pieces_[weight.first_piece].spec);
      }
    }
  }
  if (contents == FsdpGatherContents::kFrozen) return out;
  if (contents == FsdpGatherContents::kFrozenAndLora) ++column;  // the alignment padding
  for (const ShardSpec& spec : lora_specs_) {
    out.lora.push_back(Unshard(columns[column++].view(lora_dtype_), spec));
  }
  return out;
}

}  // namespace qlorad::trainer::parallel
