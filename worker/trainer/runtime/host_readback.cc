#include "worker/trainer/runtime/host_readback.h"

#include <ATen/DeviceAccelerator.h>

#include "worker/trainer/runtime/host_staging.h"

namespace qlorad::trainer {

HostReadback::HostReadback(const at::Tensor& values) {
  TORCH_CHECK(values.dim() == 1, "HostReadback: a 1-D tensor, not ", values.sizes());
  const at::Tensor fp64 = values.to(at::kDouble);
  if (values.device().is_cpu()) {
    host_ = fp64.clone();  // the caller may change `values` afterwards, as on a GPU
    return;
  }
  // The buffer is this readback's own (one per step, a few bytes): nothing refills it while the
  // copy runs, and the caching host allocator takes it back only after the copy's event.
  host_ = StagingBuffer(fp64.numel(), at::kDouble, values.device());
  host_.copy_(fp64, /*non_blocking=*/true);
  copied_.emplace(values.device().type());
  const c10::Device device = values.device();
  copied_->record(at::accelerator::getCurrentStream(
      device.has_index() ? device.index() : at::accelerator::getDeviceIndex()));
}

std::vector<double> HostReadback::Read() {
  if (copied_) copied_->synchronize();
  const double* data = host_.data_ptr<double>();
  return std::vector<double>(data, data + host_.numel());
}

}  // namespace qlorad::trainer
