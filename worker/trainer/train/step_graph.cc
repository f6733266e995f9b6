#include "worker/trainer/train/step_graph.h"

#include <string>
#include <utility>

#include "worker/trainer/model/adapter_cast_cache.h"

namespace qlorad::trainer {

std::string StepGraphUnsuitable(const StepGraphJob& job) {
  if (job.switch_value != nullptr && std::string(job.switch_value) == "0") {
    return "QLORAD_CUDA_GRAPH=0";
  }
  if (job.world_size > 1) return "several ranks";
  if (job.dropout) return "lora.dropout draws new masks every step";
  if (job.offload) return "activation offload moves tensors through host memory";
  if (job.classifier) return "task: classification";
  if (job.phase_timing) return "QLORAD_PHASE_TIMING waits for the device inside the step";
  if (job.injected_oom) return "QLORAD_INJECT_OOM_ROWS raises inside the step";
  return "";
}

#ifndef QLORAD_HAVE_CUDA_GRAPHS
std::unique_ptr<GraphRecorder> MakeGraphRecorder(at::Device /*device*/) {
  return nullptr;
}
#endif

namespace {

// The sizes of a forward's inputs, then its labels': what a recording fixes.
std::vector<int64_t> ShapeOf(const at::Tensor& inputs, const at::Tensor& labels) {
  std::vector<int64_t> shape = inputs.sizes().vec();
  shape.insert(shape.end(), labels.sizes().begin(), labels.sizes().end());
  return shape;
}

}  // namespace

StepGraph::StepGraph(std::unique_ptr<GraphRecorder> recorder, std::vector<at::Tensor> params,
                     int64_t eager_steps)
    : recorder_(std::move(recorder)), params_(std::move(params)), eager_steps_(eager_steps) {}

at::Tensor StepGraph::Run(const Forward& forward, const at::Tensor& inputs,
                          const at::Tensor& labels, double scale) {
  if (recorder_ == nullptr || !failure_.empty()) return Eager(forward, inputs, labels, scale);
  std::vector<int64_t> shape = ShapeOf(inputs, labels);
  if (recorded_) {
    if (shape == shape_) return Replay(inputs, labels, scale);
    Drop(inputs);
    return Eager(forward, inputs, labels, scale);
  }
  same_shape_steps_ = shape == shape_ ? same_shape_steps_ + 1 : 1;
  shape_ = std::move(shape);
  if (same_shape_steps_ > eager_steps_) return RecordAndReplay(forward, inputs, labels, scale);
  return Eager(forward, inputs, labels, scale);
}

void StepGraph::Drop(const at::Tensor& inputs) {
  failure_ = "rows of another shape than the recording's (" + c10::str(inputs.sizes()) +
             " against " + c10::str(inputs_.sizes()) + ")";
  dropped_ = true;
  // The graph's memory goes back to the allocator, which hands it to the device when it needs it.
  recorder_.reset();
  inputs_ = labels_ = scale_ = loss_ = at::Tensor();
  grads_.clear();
}

at::Tensor StepGraph::Eager(const Forward& forward, const at::Tensor& inputs,
                            const at::Tensor& labels, double scale) {
  // A fill on the device, as the graph's own scale is refilled: the host never copies it over.
  return forward(inputs, labels, at::full({}, scale, inputs.options().dtype(at::kDouble)));
}

at::Tensor StepGraph::RecordAndReplay(const Forward& forward, const at::Tensor& inputs,
                                      const at::Tensor& labels, double scale) {
  // The recorded backward must create each gradient (then every replay rewrites it), not add
  // into one an eager step left: zero_grad has let go of them all, as at every step's start.
  for (const at::Tensor& p : params_) {
    if (p.grad().defined()) {
      failure_ = "a gradient was already set when the step was recorded";
      return Eager(forward, inputs, labels, scale);
    }
  }
  inputs_ = inputs.clone();
  labels_ = labels.clone();
  scale_ = at::full({}, scale, inputs.options().dtype(at::kDouble));
  std::string error;
  const bool ok = recorder_->Record([&] { loss_ = forward(inputs_, labels_, scale_); }, &error);
  if (!ok) {
    failure_ = error.empty() ? "recording failed" : error;
    for (at::Tensor& p : params_) p.mutable_grad() = at::Tensor();
    inputs_ = labels_ = scale_ = loss_ = at::Tensor();
    // The adapters' casts the recording put in their caches were never computed (a recording
    // runs nothing): the eager rerun must cast again, not find them.
    AdapterCastCache::NewStep();
    return Eager(forward, inputs, labels, scale);
  }
  for (const at::Tensor& p : params_) grads_.push_back(p.grad());
  recorded_ = true;
  // Recording ran nothing: this step's work is the first replay.
  return Replay(inputs, labels, scale);
}

at::Tensor StepGraph::Replay(const at::Tensor& inputs, const at::Tensor& labels, double scale) {
  inputs_.copy_(inputs);
  labels_.copy_(labels);
  scale_.fill_(scale);
  recorder_->Replay();
  ++replays_;
  for (size_t i = 0; i < params_.size(); ++i) params_[i].mutable_grad() = grads_[i];
  // The next replay rewrites loss_; the caller may hold this one longer.
  return loss_.clone();
}

}  // namespace qlorad::trainer
