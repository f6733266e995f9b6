#include "worker/trainer/train/batch_prefetcher.h"

#include <ATen/DeviceAccelerator.h>

#include <algorithm>
#include <exception>
#include <utility>

#include "worker/trainer/runtime/host_staging.h"

namespace qlorad::trainer {

namespace {

// Each per-token tensor of a micro-batch starts at a multiple of 16 elements (128 bytes) of the
// step's buffer, so the device views are as aligned as tensors of their own for vectorized loads.
constexpr int64_t kAlignElements = 16;

int64_t Aligned(int64_t n) {
  return (n + kAlignElements - 1) / kAlignElements * kAlignElements;
}

int64_t SegmentElements(const Batch& b) {
  return Aligned(b.rows * b.seq_len);
}

// inputs, labels and, for packed rows only, positions and the document offsets (unpacked rows
// take the plain causal path).
int64_t ElementsOf(const Batch& b) {
  if (!b.packed_documents) return 2 * SegmentElements(b);
  return 3 * SegmentElements(b) + Aligned(static_cast<int64_t>(b.document_offsets.size()));
}

}  // namespace

BatchPrefetcher::BatchPrefetcher(Batcher& batcher, const StepShape& shape, at::Device device,
                                 int64_t first_step, int64_t end_step)
    : batcher_(batcher),
      shape_(shape),
      device_(device),
      next_step_(first_step),
      end_step_(end_step) {
  if (device_.is_cuda()) {
    for (Slot& slot : slots_) slot.copied.emplace(device_.type());
  }
  thread_ = std::thread([this, first_step] { Run(first_step); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void BatchPrefetcher::Run(int64_t first_step) {
  // Page-locked allocations then happen in the context of the training device (a rank of
  // `launch` sees every GPU of the host), not in one the thread would create on GPU 0.
  if (device_.is_cuda() && device_.has_index()) at::accelerator::setDeviceIndex(device_.index());
  for (int64_t step = first_step; step < end_step_; ++step) {
    size_t k = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] { return stop_ || !free_.empty(); });
      if (stop_) return;
      k = free_.front();
      free_.pop_front();
    }
    std::string error;
    try {
      Fill(slots_[k]);
    } catch (const std::exception& e) {
      error =
          std::string("drawing the batches of step ") + std::to_string(step + 1) + ": " + e.what();
    }
    const bool failed = !error.empty();
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (failed) {
        error_ = std::move(error);
      } else {
        ready_.push_back(k);
      }
    }
    changed_.notify_all();
    if (failed) return;
  }
}

void BatchPrefetcher::Fill(Slot& slot) {
  // The copy of the step this buffer last held may still be running on the device: only this
  // thread waits for it, never the training thread.
  if (slot.copied) slot.copied->synchronize();
  slot.batches = DrawStepBatches(batcher_, shape_);
  slot.used = 0;
  for (const Batch& b : slot.batches.mine) slot.used += ElementsOf(b);
  if (!slot.host.defined() || slot.host.numel() < slot.used) {
    slot.host = StagingBuffer(slot.used, at::kLong, device_);
  }
  int64_t* out = slot.host.data_ptr<int64_t>();
  for (const Batch& b : slot.batches.mine) {
    const int64_t segment = SegmentElements(b);
    std::copy(b.inputs.begin(), b.inputs.end(), out);
    std::copy(b.labels.begin(), b.labels.end(), out + segment);
    if (b.packed_documents) {
      std::copy(b.positions.begin(), b.positions.end(), out + 2 * segment);
      std::copy(b.document_offsets.begin(), b.document_offsets.end(), out + 3 * segment);
    }
    out += ElementsOf(b);
  }
}

DeviceStep BatchPrefetcher::Upload(Slot& slot) {
  const at::Tensor host = slot.host.narrow(0, 0, slot.used);
  // One copy per step. The CPU copies too: the buffer is refilled while the step still runs.
  const at::Tensor all = device_.is_cpu() ? host.clone() : host.to(device_, /*non_blocking=*/true);
  if (slot.copied) {
    slot.copied->record(at::accelerator::getCurrentStream(
        device_.has_index() ? device_.index() : at::accelerator::getDeviceIndex()));
  }
  DeviceStep step;
  step.global_valid = slot.batches.global_valid;
  step.global_tokens = slot.batches.global_tokens;
  step.after = slot.batches.after;
  int64_t offset = 0;
  for (const Batch& b : slot.batches.mine) {
    const int64_t segment = SegmentElements(b);
    const int64_t n = b.rows * b.seq_len;
    DeviceMicroBatch mb;
    mb.inputs = all.narrow(0, offset, n).view({b.rows, b.seq_len});
    mb.labels = all.narrow(0, offset + segment, n);
    if (b.packed_documents) {
      mb.positions = all.narrow(0, offset + 2 * segment, n).view({b.rows, b.seq_len});
      // int32, as the kernels take them: a cast queued on the device, no wait.
      mb.cu_seqlens =
          all.narrow(0, offset + 3 * segment, static_cast<int64_t>(b.document_offsets.size()))
              .to(at::kInt);
      mb.document_offsets = b.document_offsets;
    }
    mb.valid_labels = b.valid_labels;
    step.micro_batches.push_back(std::move(mb));
    offset += ElementsOf(b);
  }
  return step;
}

StatusOr<DeviceStep> BatchPrefetcher::Next() {
  if (next_step_ >= end_step_) {
    return FailedPrecondition("BatchPrefetcher: no step " + std::to_string(next_step_ + 1) +
                              ": it draws steps up to " + std::to_string(end_step_));
  }
  size_t k = 0;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return !ready_.empty() || !error_.empty(); });
    if (ready_.empty()) return Internal(error_);
    k = ready_.front();
    ready_.pop_front();
  }
  DeviceStep step = Upload(slots_[k]);
  ++next_step_;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(k);
  }
  changed_.notify_all();
  return step;
}

}  // namespace qlorad::trainer
