#include "worker/trainer/parallel/fsdp_gradient_reducer.h"

#include <utility>

namespace qlorad::trainer::parallel {

FsdpGradientReducer::FsdpGradientReducer(Communicator& comm, std::vector<ShardSpec> specs,
                                         at::TensorOptions grad_options, bool sums_to_host)
    : comm_(comm),
      specs_(std::move(specs)),
      grad_options_(grad_options),
      sums_to_host_(sums_to_host) {}

void FsdpGradientReducer::Start(const std::vector<at::Tensor>& grads) {
  TORCH_CHECK(grads.size() == specs_.size(), "FsdpGradientReducer: ", grads.size(),
              " gradients for ", specs_.size(), " LoRA tensors");
  // Each gradient as its rows, padded to whole shards and laid out rank-major ([world, per rank]:
  // rank r's slice holds its rows of every tensor) by one _chunk_cat, as FSDP2 packs its
  // reduce-scatter input. Padding rows get zero gradient and stay zero under AdamW.
  std::vector<at::Tensor> rows;
  for (size_t i = 0; i < specs_.size(); ++i) {
    const ShardSpec& spec = specs_[i];
    const at::Tensor grad = grads[i].defined() ? grads[i] : at::zeros(spec.shape, grad_options_);
    rows.push_back(grad.reshape({spec.rows, spec.unit}));
  }
  // The reduction is fp32 whatever the gather dtype.
  at::Tensor input = at::_chunk_cat(rows, /*dim=*/0, comm_.world_size()).to(at::kFloat);
  at::Tensor flat = input.view({-1});
  at::Tensor output = at::empty({input.size(1)}, input.options());
  pending_.push_back({comm_.ReduceScatterSum(output, flat), input, output});
}

Status FsdpGradientReducer::AccumulateInto(const std::vector<at::Tensor>& shards) {
  TORCH_CHECK(shards.size() == specs_.size(), "FsdpGradientReducer: ", shards.size(),
              " shards for ", specs_.size(), " LoRA tensors");
  std::vector<int64_t> sizes;
  for (const ShardSpec& spec : specs_) sizes.push_back(spec.shard_numel());
  for (Pending& reduce : pending_) {
    QLORAD_RETURN_IF_ERROR(reduce.work->Wait());
    // Separate tensors, not views of the output: the optimizer's zero_grad detaches them.
    std::vector<at::Tensor> sums = at::split_with_sizes_copy(
        sums_to_host_ ? reduce.output.to(at::kCPU) : reduce.output, sizes);
    std::vector<at::Tensor> grads, addends;
    for (size_t i = 0; i < specs_.size(); ++i) {
      at::Tensor& grad = shards[i].mutable_grad();
      if (grad.defined()) {
        grads.push_back(grad);
        addends.push_back(sums[i]);
      } else {
        grad = std::move(sums[i]);
      }
    }
    if (!grads.empty()) at::_foreach_add_(grads, addends);
  }
  pending_.clear();
  return Status::Ok();
}

}  // namespace qlorad::trainer::parallel
