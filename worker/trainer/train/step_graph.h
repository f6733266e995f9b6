// A step's forward and backward recorded once as a CUDA graph and replayed on the steps after it.
// Launched one by one, the ~3000 kernels of a Llama-3.2-1B 4 x 2048 step leave the GPU idle
// between them: 4.65 ms a step in gaps under 10 us and about 1.9 ms in longer ones where the host
// fell behind (bench/results/2026-12-07-h100-316de9d-trace-ckpt-off.txt, a 108.5 ms step). A
// replayed graph runs them back to back, whatever the host is doing.
//
// A replay does what the recording did: the same kernels on the same memory. So the step's inputs,
// labels and loss scale live in buffers of the graph, refilled before each replay; the LoRA
// gradients are the buffers the recorded backward wrote, handed back to the parameters after each
// replay (the optimizer's zero_grad lets go of them); and everything the host decided while
// recording (shapes, tilings, which kernels) holds for every replay. Hence the conditions:
//  - for the job (StepGraphUnsuitable): one CUDA device and one rank; no dropout (its masks would
//    be drawn once, and checkpointing would replay the generators' state, which cannot be read
//    while recording); no activation offload (its copies through page-locked host memory are
//    paced by the host); no classification head; no phase timing or injected out-of-memory
//    errors (both act from the host in the middle of a step). Checkpointing without offload is
//    recorded like the rest: the recompute is part of the recorded backward;
//  - for a step (StepGraph::Run's caller): one forward for the whole step (one micro-batch, not
//    cut after running out of memory) and rows without packed documents (their bounds change);
//  - for recording: rows of the shape of the eager steps before it (a job whose batches vary in
//    length would otherwise hold the graph's memory, a step's worth, for the few steps that
//    match). A step of another shape after the recording lets the graph go, memory and all, and
//    every later step runs eagerly.
// Steps that do not qualify run as before, so a graph changes speed, never results: a replay runs
// the very kernels the eager step would (tests/gpu/test_train_cuda.py compares the losses bit for
// bit). QLORAD_CUDA_GRAPH=0 turns graphs off.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace qlorad::trainer {

// What decides whether a job's steps may be recorded.
struct StepGraphJob {
  int64_t world_size = 1;   // ranks of the job
  bool dropout = false;     // lora.dropout > 0
  bool offload = false;     // activation offload (with checkpointing)
  bool classifier = false;  // task: classification
  bool phase_timing = false;
  bool injected_oom = false;           // QLORAD_INJECT_OOM_ROWS
  const char* switch_value = nullptr;  // QLORAD_CUDA_GRAPH: "0" turns graphs off
};

// Empty when a GPU job's steps may be recorded; otherwise why not, for the job's log.
std::string StepGraphUnsuitable(const StepGraphJob& job);

// The backend that records and replays; CUDA builds have one (step_graph_cuda.cc).
class GraphRecorder {
 public:
  virtual ~GraphRecorder() = default;
  // Runs `record` while recording it into a new graph. Returns false (and logs nothing) when the
  // recording failed: `record` raised, or something in it cannot be captured; the error is in
  // `error`.
  virtual bool Record(const std::function<void()>& record, std::string* error) = 0;
  virtual void Replay() = 0;
};

// A CUDA build's recorder for `device`, or null where there is none (a CPU build).
std::unique_ptr<GraphRecorder> MakeGraphRecorder(at::Device device);

class StepGraph {
 public:
  // The forward and backward of one forward's rows: returns the loss it added (on the device,
  // detached) after scaling it by `scale` (a 0-dim fp64 tensor on the device) for backward.
  using Forward = std::function<at::Tensor(const at::Tensor& inputs, const at::Tensor& labels,
                                           const at::Tensor& scale)>;

  // Steps of the recorded shape run eagerly before the recording: the first calls of cuBLAS,
  // cuDNN and the caching allocator set things up (handles, workspaces, plans) that a recording
  // must find done.
  static constexpr int64_t kEagerSteps = 2;

  // `params`: the trained tensors whose gradients the recorded backward writes.
  StepGraph(std::unique_ptr<GraphRecorder> recorder, std::vector<at::Tensor> params,
            int64_t eager_steps = kEagerSteps);

  // `forward` on (inputs, labels) with the loss scaled by `scale`: eagerly, or recorded once
  // kEagerSteps steps of the same shape ran eagerly, and replayed while the shapes match.
  at::Tensor Run(const Forward& forward, const at::Tensor& inputs, const at::Tensor& labels,
                 double scale);

  bool recorded() const { return recorded_; }
  int64_t replays() const { return replays_; }
  // Why recording failed, or why the recorded graph was let go (then every later step ran
  // eagerly); empty while neither happened.
  const std::string& failure() const { return failure_; }
  bool dropped() const { return dropped_; }

 private:
  at::Tensor Eager(const Forward& forward, const at::Tensor& inputs, const at::Tensor& labels,
                   double scale);
  void Drop(const at::Tensor& inputs);
  at::Tensor RecordAndReplay(const Forward& forward, const at::Tensor& inputs,
                             const at::Tensor& labels, double scale);
  at::Tensor Replay(const at::Tensor& inputs, const at::Tensor& labels, double scale);

  std::unique_ptr<GraphRecorder> recorder_;
  std::vector<at::Tensor> params_;
  int64_t eager_steps_;
  // The latest eager steps' shape (ShapeOf) and how many in a row had it; once recorded, the
  // recording's.
  std::vector<int64_t> shape_;
  int64_t same_shape_steps_ = 0;
  bool recorded_ = false;
  bool dropped_ = false;
  int64_t replays_ = 0;
  std::string failure_;
  // The graph's own memory: what each replay reads and writes.
  at::Tensor inputs_, labels_, scale_, loss_;
  std::vector<at::Tensor> grads_;  // params_[i]'s gradient as the recording left it
};

}  // namespace qlorad::trainer
