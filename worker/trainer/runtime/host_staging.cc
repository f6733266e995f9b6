#include "worker/trainer/runtime/host_staging.h"

namespace qlorad::trainer {

at::Tensor StagingBuffer(int64_t numel, at::ScalarType dtype, at::Device device) {
  return at::empty({numel}, at::TensorOptions().dtype(dtype).pinned_memory(device.is_cuda()));
}

at::Tensor CopyToDeviceAsync(const at::Tensor& host, at::Device device) {
  TORCH_CHECK(host.is_cpu(), "CopyToDeviceAsync: expected a CPU tensor, got ", host.device());
  if (device.is_cpu()) return host;
  at::Tensor staged = StagingBuffer(host.numel(), host.scalar_type(), device).view(host.sizes());
  staged.copy_(host);
  return staged.to(device, /*non_blocking=*/true);
}

}  // namespace qlorad::trainer
