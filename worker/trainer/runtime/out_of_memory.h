// Running out of device memory inside a training step: what torch's error says about it, and a
// test hook that makes it happen where no GPU is.
//
// Two test hooks (documented in worker/trainer/README.md):
// - QLORAD_INJECT_OOM_ROWS=N: every forward of a micro-batch with more than N rows throws
//   c10::OutOfMemoryError once the forward has run (so the failed attempt holds a graph, as a real
//   one would), on any device. The trainer's out-of-memory retry (train/trainer.cc) then runs on
//   a CPU exactly as it would on a GPU.
// - QLORAD_CUDA_MEMORY_FRACTION=F: the CUDA caching allocator may hold only F of the device's
//   memory (torch.cuda.set_per_process_memory_fraction), so a large GPU runs out like a small one.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"

namespace qlorad::trainer {

class OomInjection {
 public:
  // From QLORAD_INJECT_OOM_ROWS; unset: none. A value that is not a whole number >= 0 is an
  // error naming the variable.
  static StatusOr<OomInjection> FromEnvironment();

  // Throws c10::OutOfMemoryError, worded as the caching allocator's, when `rows` is over the limit.
  // `bytes`: what the message says the forward tried to allocate.
  void MaybeThrow(int64_t rows, int64_t bytes) const;
  // Whether QLORAD_INJECT_OOM_ROWS is set.
  bool active() const { return max_rows_.has_value(); }

 private:
  std::optional<int64_t> max_rows_;
};

// Applies QLORAD_CUDA_MEMORY_FRACTION to `device`, when set; returns what it set, for the log.
// A bad value, or one set for a device without a caching allocator, is an error naming it.
StatusOr<std::optional<double>> LimitMemoryFromEnvironment(at::Device device);

// The part of torch's out-of-memory message that says what was asked for and what was in use,
// e.g. "Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.11 GiB of which 1.06 GiB is
// free. ... 75.31 GiB is allocated by PyTorch ...": its first line, without the advice on
// PYTORCH_CUDA_ALLOC_CONF that follows, and without "CUDA out of memory. ".
std::string DescribeOutOfMemory(const c10::OutOfMemoryError& error);

}  // namespace qlorad::trainer
