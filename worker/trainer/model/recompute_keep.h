// Tensors a checkpointed decoder layer keeps from its forward for its recompute in backward
// (parallel/activation_recompute.h), so that the recompute skips the work that made them.
//
// Attention keeps its output and log-sum-exp (attention.cc): its forward is the costliest part of
// a layer to run again at long context (at 8B shapes and 32K tokens, about a tenth of the step),
// its backward needs exactly those, and what it keeps is one more [tokens, hidden] tensor a layer,
// which activation offload moves to host memory beside the layer's input. The recompute then
// runs the projections, the rotation and the MLP again, and attention's backward reads the kept
// tensors: the same bits the recompute would have made, since the forward's kernels are
// deterministic.
//
// The MLP may keep its gate|up output too (KeptParts::mlp; ChunkedMlp then skips the gate|up GEMM
// in backward): one [tokens, 2 x intermediate] tensor a layer, so only where the host has room for
// it and the context is long enough for the layer's attention to hide its copies
// (train/checkpointing_choice.h PlanKeepMlp).
//
// The recompute asks for the kept tensors in the order the forward kept them; the same code on
// the same input does. A mismatch (another count or shape) is a bug and fails loudly.
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <vector>

namespace qlorad::trainer {

// Which parts of a layer keep what their recompute would compute again.
struct KeptParts {
  bool attention = false;  // the output, log-sum-exp and RNG state (attention.cc)
  bool mlp = false;        // the gate|up output (llama_model.cc, chunked_mlp.h)
  bool any() const { return attention || mlp; }
};

class RecomputeKeep {
 public:
  // For a checkpointed forward: Keep() collects, Kept() hands the collection over.
  static RecomputeKeep Recording(KeptParts parts) { return RecomputeKeep(parts, false, {}); }
  // For the recompute: Next() hands back `kept`, in order.
  static RecomputeKeep Replaying(KeptParts parts, std::vector<at::Tensor> kept) {
    return RecomputeKeep(parts, true, std::move(kept));
  }

  const KeptParts& parts() const { return parts_; }
  bool replaying() const { return replaying_; }
  // How many tensors were kept so far (recording) or handed back so far (replaying).
  size_t count() const { return replaying_ ? next_ : kept_.size(); }
  // Recording only: keeps `tensors` (undefined ones too: they come back undefined).
  void Keep(at::TensorList tensors);
  // Replaying only: the next `count` kept tensors. `what` names the caller in the error.
  std::vector<at::Tensor> Next(size_t count, const char* what);
  // Recording: what was kept; replaying: what was not asked for (empty after a faithful replay).
  std::vector<at::Tensor> Kept() &&;

 private:
  RecomputeKeep(KeptParts parts, bool replaying, std::vector<at::Tensor> kept)
      : parts_(parts), replaying_(replaying), kept_(std::move(kept)) {}

  KeptParts parts_;
  bool replaying_;
  std::vector<at::Tensor> kept_;
  size_t next_ = 0;
};

// The keep of the checkpointed function this thread runs; nullptr outside one, or when it keeps
// nothing.
RecomputeKeep* CurrentRecomputeKeep();
// The current keep when it keeps `part` (&KeptParts::attention, &KeptParts::mlp); else nullptr.
RecomputeKeep* CurrentRecomputeKeep(bool KeptParts::*part);

// Makes `keep` (nullptr: none) this thread's current one while it lives.
class RecomputeKeepScope {
 public:
  explicit RecomputeKeepScope(RecomputeKeep* keep);
  ~RecomputeKeepScope();
  RecomputeKeepScope(const RecomputeKeepScope&) = delete;
  RecomputeKeepScope& operator=(const RecomputeKeepScope&) = delete;

 private:
  RecomputeKeep* outer_;
};

}  // namespace qlorad::trainer
