// The CUDA build's GraphRecorder (step_graph.h): LibTorch's CUDAGraph, recorded on a stream of
// its own (capture cannot use the legacy default stream) and replayed on the caller's.
#include <ATen/core/CachingHostAllocator.h>
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
    // A pool of the recorder's own naming, so that a failed recording can hand it back: a capture
    // that ends in an error leaves LibTorch's allocators routing to it (CUDAGraph::capture_end
    // raises before it ends the routing, and reset() then releases nothing).
    pool_ = at::cuda::graph_pool_handle();
    graph_ = std::make_unique<at::cuda::CUDAGraph>();
    try {
      const c10::cuda::CUDAStreamGuard on_stream(stream);
      // Thread-local: other threads stay free to make calls a global capture forbids everywhere
      // (the batch prefetcher waits for its copy's event and may allocate page-locked memory
      // while a step is recorded); work queued on the recorded stream from any thread, such as
      // autograd's backward thread, is still recorded.
      graph_->capture_begin(pool_, cudaStreamCaptureModeThreadLocal);
      record();
      graph_->capture_end();
    } catch (const std::exception& e) {
      *error = e.what();
      CleanUpFailedRecording(stream);
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
  // After a recording that raised (in capture_begin, in `record` or in capture_end): the stream
  // runs work again, the allocators stop routing to the pool and let it go (unless the capture
  // had ended, when the graph's reset() does that), and no CUDA error is left pending.
  void CleanUpFailedRecording(const c10::cuda::CUDAStream& stream) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream.stream(), &status) == cudaSuccess &&
        status != cudaStreamCaptureStatusNone) {
      cudaGraph_t partial = nullptr;
      (void)cudaStreamEndCapture(stream.stream(), &partial);  // invalid captures end too
      if (partial != nullptr) (void)cudaGraphDestroy(partial);
    }
    bool ended = true;
    try {
      (void)graph_->pool();  // raises unless capture_end got as far as marking the capture ended
    } catch (const std::exception&) {
      ended = false;
    }
    if (!ended) {
      const c10::DeviceIndex device = device_.index();
      // Each step may already be done (a failure after it): "not recording" is no news then.
      IgnoreErrors([&] { c10::cuda::CUDACachingAllocator::endAllocateToPool(device, pool_); });
      IgnoreErrors([&] { at::getHostAllocator(at::kCUDA)->end_allocate_to_pool(pool_); });
      IgnoreErrors([&] { c10::cuda::CUDACachingAllocator::releasePool(device, pool_); });
      IgnoreErrors([&] { at::getHostAllocator(at::kCUDA)->release_pool(pool_); });
    }
    graph_.reset();
    (void)cudaGetLastError();
  }

  template <typename F>
  static void IgnoreErrors(F&& f) {
    try {
      f();
    } catch (const std::exception&) {
    }
  }

  at::Device device_;
  at::cuda::MempoolId_t pool_{0, 0};
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
};

}  // namespace

std::unique_ptr<GraphRecorder> MakeGraphRecorder(at::Device device) {
  if (!device.is_cuda()) return nullptr;
  return std::make_unique<CudaGraphRecorder>(device);
}

}  // namespace qlorad::trainer
