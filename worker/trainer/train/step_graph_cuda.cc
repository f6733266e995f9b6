// The CUDA build's GraphRecorder (step_graph.h): LibTorch's CUDAGraph, recorded on a stream of
// its own (capture cannot use the legacy default stream) and replayed on the caller's.
#include <ATen/cuda/CUDAContextLight.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <exception>
#include <memory>
#include <string>

#include "worker/trainer/train/step_graph.h"

namespace qlorad::trainer {

namespace {

class CudaGraphRecorder final : public GraphRecorder {
 public:
  // A device named "cuda" without an index means the current one.
  explicit CudaGraphRecorder(at::Device device)
      : device_(device.has_index() ? device : at::Device(at::kCUDA, c10::cuda::current_device())) {}

  bool Record(const std::function<void()>& record, std::string* error) override {
    const c10::cuda::CUDAGuard on_device(device_);
    const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream();
    // The graph's memory is a pool of its own, which the eager steps' cached blocks cannot serve:
    // give those back to the device first, or the process would hold a step's memory twice. The
    // same for cuBLAS's workspaces, one per stream (32 MiB on Hopper): the recording stream gets
    // its own, and the caller's would otherwise stay beside it (on an H100 the graphed 1B step's
    // peak was 0.06-0.07 GiB above the eager one's, about two of them:
    // bench/results/2026-12-07-h100-c32a380-gpu_run.txt). An eager GEMM later (an evaluation)
    // sets up one again.
    caller.synchronize();
    at::cuda::clearCublasWorkspaces();
    c10::cuda::CUDACachingAllocator::emptyCache();
    const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, caller.device_index());
    at::cuda::CUDAEvent ready;
    ready.record(caller);
    ready.block(stream);
    graph_ = std::make_unique<at::cuda::CUDAGraph>();
    try {
      const c10::cuda::CUDAStreamGuard on_stream(stream);
      // Thread-local: other threads stay free to make calls a global capture forbids everywhere
      // (the batch prefetcher waits for its copy's event and may allocate page-locked memory
      // while a step is recorded); work queued on the recorded stream from any thread, such as
      // autograd's backward thread, is still recorded.
      graph_->capture_begin(/*pool=*/{0, 0}, cudaStreamCaptureModeThreadLocal);
      try {
        record();
      } catch (...) {
        Abandon();
        throw;
      }
      graph_->capture_end();
    } catch (const std::exception& e) {
      *error = e.what();
      graph_.reset();
      (void)cudaGetLastError();  // a refused capture leaves its error behind
      return false;
    }
    at::cuda::CUDAEvent recorded;
    recorded.record(stream);
    recorded.block(caller);
    return true;
  }

  void Replay() override {
    const c10::cuda::CUDAGuard on_device(device_);
    graph_->replay();
  }

 private:
  // Ends a capture that `record` left by raising, so that the stream runs work again.
  void Abandon() {
    try {
      graph_->capture_end();
    } catch (...) {
      // The capture was invalid (what raised may be why); it has ended all the same.
    }
  }

  at::Device device_;
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
};

}  // namespace

std::unique_ptr<GraphRecorder> MakeGraphRecorder(at::Device device) {
  if (!device.is_cuda()) return nullptr;
  return std::make_unique<CudaGraphRecorder>(device);
}

}  // namespace qlorad::trainer
