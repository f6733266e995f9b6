// Numbers read back from the device without making the host wait for them yet. A plain copy to
// the host returns only once everything queued before it on the stream has run; the training loop
// wants to queue the next step first and read this step's loss, stop request and gradient norm
// afterwards (trainer.cc), so that the device never idles between two steps while the host reads
// and reports. On a GPU this is a non_blocking copy into page-locked memory with an event behind
// it, and Read() waits for that event alone; on the CPU the numbers are there at once.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Event.h>

#include <optional>
#include <vector>

namespace qlorad::trainer {

class HostReadback {
 public:
  HostReadback() = default;
  // Queues the copy of `values` (1-D, any floating dtype, on any device) on the current stream.
  explicit HostReadback(const at::Tensor& values);

  // The values as doubles, once the copy has completed.
  std::vector<double> Read();

 private:
  at::Tensor host_;                   // fp64, page-locked on a GPU
  std::optional<c10::Event> copied_;  // recorded after the copy (GPU only)
};

}  // namespace qlorad::trainer
