// ProcessGroup*.hpp declares nothing without USE_C10D_NCCL; TorchConfig's flags set it, this is
// for builds whose flags do not.
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <cstdlib>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "worker/trainer/parallel/c10d_backends.h"

namespace qlorad::trainer::parallel {

c10::intrusive_ptr<c10d::Backend> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size,
                                                  std::chrono::milliseconds timeout) {
  // A collective that outlives `timeout` must end the process, not leave it waiting on a hung
  // peer: ProcessGroupNCCL's watchdog does that when async error handling tears down (torch
  // 2.11's default, 3 = SkipCleanUp; it reads TORCH_NCCL_ASYNC_ERROR_HANDLING in its
  // constructor). Pinned here so a torch change of default cannot undo it; an explicit setting
  // in the environment wins (the trainer's own watchdog still bounds a stalled step).
  setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3", /*overwrite=*/0);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
}

}  // namespace qlorad::trainer::parallel
