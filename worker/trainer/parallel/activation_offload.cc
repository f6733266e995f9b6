#include "worker/trainer/parallel/activation_offload.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

namespace qlorad::trainer {

namespace {

// Stream `to` waits for what `from` has queued so far.
void WaitFor(const c10::Stream& to, const c10::Stream& from) {
  c10::Event event(from.device_type());
  event.record(from);
  to.wait(event);
}

// x's bytes as a flat uint8 tensor (x contiguous).
at::Tensor BytesOf(const at::Tensor& x) {
  return x.view(-1).view(at::kByte);
}

}  // namespace

std::vector<int64_t> HostPieceBytes(int64_t bytes, int64_t min_piece) {
  TORCH_CHECK(bytes >= 0 && min_piece > 0, "HostPieceBytes: ", bytes, " bytes, pieces of ",
              min_piece);
  std::vector<int64_t> pieces;
  while (bytes >= min_piece) {
    int64_t piece = 1;
    while (piece <= bytes / 2) piece *= 2;
    pieces.push_back(piece);
    bytes -= piece;
  }
  if (bytes > 0) pieces.push_back(bytes);
  return pieces;
}

c10::Stream ActivationOffloader::SideStream(at::Device device) {
  if (!side_) {
    side_ = c10::impl::VirtualGuardImpl(device.type()).getStreamFromGlobalPool(device);
  }
  return *side_;
}

c10::intrusive_ptr<OffloadedInput> ActivationOffloader::Put(int64_t layer, const at::Tensor& x) {
  const std::lock_guard<std::mutex> lock(mutex_);
  TORCH_CHECK(layer >= 0, "ActivationOffloader::Put: layer ", layer);
  TORCH_CHECK(!device_ || *device_ == x.device(), "ActivationOffloader: inputs on ", device_->str(),
              " and ", x.device().str());
  device_ = x.device();
  if (layer == 0) {
    ++pass_;
    by_layer_.clear();
  }
  auto input = c10::make_intrusive<OffloadedInput>();
  input->layer = layer;
  input->pass = pass_;
  input->sizes = x.sizes().vec();
  input->dtype = x.scalar_type();
  const at::Tensor flat = x.contiguous();
  const at::TensorOptions host_options =
      at::TensorOptions().dtype(at::kByte).device(at::kCPU).pinned_memory(x.is_cuda());
  const auto copy_out = [&] {
    const at::Tensor bytes = BytesOf(flat);
    int64_t offset = 0;
    for (const int64_t piece : HostPieceBytes(bytes.numel(), min_piece_)) {
      input->host.push_back(at::empty({piece}, host_options));
      input->host.back().copy_(bytes.narrow(0, offset, piece), /*non_blocking=*/x.is_cuda());
      offset += piece;
    }
  };
  if (x.is_cuda()) {
    const c10::impl::VirtualGuardImpl impl(x.device().type());
    const c10::Stream compute = impl.getStream(x.device());
    const c10::Stream side = SideStream(x.device());
    WaitFor(side, compute);  // x is complete
    {
      const c10::StreamGuard on_side(side);
      copy_out();
    }
    // x's memory goes back to the allocator when the caller drops it, maybe before the copy
    // has run: the allocator must wait for the side stream before reusing it.
    impl.recordDataPtrOnStream(flat.storage().data_ptr(), side);
  } else {
    copy_out();
  }
  input->in_host = true;
  if (by_layer_.size() <= static_cast<size_t>(layer)) by_layer_.resize(layer + 1);
  by_layer_[layer] = input;
  return input;
}

void ActivationOffloader::Fetch(OffloadedInput& input, at::Device device) {
  if (input.fetched()) return;
  TORCH_CHECK(input.in_host, "ActivationOffloader: the input of layer ", input.layer,
              " was already taken");
  const auto copy_back = [&] {
    const at::Tensor bytes = BytesOf(input.back);
    int64_t offset = 0;
    for (const at::Tensor& piece : input.host) {
      bytes.narrow(0, offset, piece.numel()).copy_(piece, /*non_blocking=*/device.is_cuda());
      offset += piece.numel();
    }
  };
  // Allocated in the compute stream's order (where it is used); on a GPU written on the side
  // stream once the compute stream is past the allocation, and not reused before that write ends.
  input.back = at::empty(input.sizes, at::TensorOptions().dtype(input.dtype).device(device));
  if (device.is_cuda()) {
    const c10::impl::VirtualGuardImpl impl(device.type());
    const c10::Stream compute = impl.getStream(device);
    const c10::Stream side = SideStream(device);
    WaitFor(side, compute);
    {
      const c10::StreamGuard on_side(side);
      copy_back();
    }
    impl.recordDataPtrOnStream(input.back.storage().data_ptr(), side);
    input.back_ready.emplace(device.type());
    input.back_ready->record(side);
  } else {
    copy_back();
  }
}

at::Tensor ActivationOffloader::Take(const c10::intrusive_ptr<OffloadedInput>& input) {
  const std::lock_guard<std::mutex> lock(mutex_);
  TORCH_CHECK(device_, "ActivationOffloader::Take before any Put");
  const at::Device device = *device_;
  Fetch(*input, device);
  if (input->back_ready) {
    c10::impl::VirtualGuardImpl(device.type()).getStream(device).wait(*input->back_ready);
  }
  // One layer ahead: the previous layer's backward comes next.
  const int64_t previous = input->layer - 1;
  if (previous >= 0 && static_cast<size_t>(previous) < by_layer_.size()) {
    const auto& next = by_layer_[previous];
    if (next && next->pass == input->pass) Fetch(*next, device);
  }
  at::Tensor back = std::move(input->back);  // leaves input->back undefined
  input->host.clear();  // its copy back is queued; the host allocator waits for it
  input->in_host = false;
  input->back_ready.reset();
  return back;
}

void ActivationOffloader::Prefetch(int64_t layer) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (!device_ || layer < 0 || static_cast<size_t>(layer) >= by_layer_.size()) return;
  const auto& input = by_layer_[layer];
  if (input && input->pass == pass_ && input->in_host) Fetch(*input, *device_);
}

ActivationOffloader& LayerOffloaders::Kind(size_t kind) {
  const std::lock_guard<std::mutex> lock(mutex_);
  while (kinds_.size() <= kind) kinds_.emplace_back(min_piece_);
  return kinds_[kind];
}

void LayerOffloaders::Prefetch(int64_t layer) {
  std::vector<ActivationOffloader*> kinds;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (ActivationOffloader& kind : kinds_) kinds.push_back(&kind);
  }
  for (ActivationOffloader* kind : kinds) kind->Prefetch(layer);
}

bool LayerOffloaders::Moves(const at::Tensor& kept, const at::Tensor& x) const {
  return kept.defined() && kept.device() == x.device() &&
         static_cast<int64_t>(kept.nbytes()) >= min_piece_;
}

}  // namespace qlorad::trainer
