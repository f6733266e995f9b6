// The adapters of one FusedProjection in the activations' dtype, cast once per optimizer step
// rather than at every use. LoRA parameters are fp32 leaves and the GEMMs run in bf16: without
// this, each projection casts every A and B (and concatenates the A's) in its forward, again in
// its backward, and again in a recompute, each a tiny kernel of its own (about 30 per decoder
// layer and step).
//
// A model's forward fills every projection's entry at once (Plan, FusedProjection::CastTogether:
// one multi-tensor copy for all of them), so that a layer finds its casts made.
//
// An entry is valid within one optimizer step (NewStep() ends every entry) while each adapter is
// the same tensor with the same storage and version counter: AdamW's update (FusedAdamWStep bumps
// the counters its fused kernel does not), a checkpoint's copy_ and any other in-place op bump
// the counter, so the next use casts again. NewStep() also covers writes no counter sees (a
// collective's broadcast of the initial adapters). Only leaf tensors are cached. A gathered (fsdp)
// adapter is a fresh non-leaf tensor each step, possibly filled by a collective that does not bump
// any counter, and is always cast afresh. The entry holds its source tensors, so a freed tensor's
// address can never match a later one.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace qlorad::trainer {

class AdapterCastCache {
 public:
  struct Casts {
    at::Tensor stacked_a;       // every A stacked [sum of r, in]
    std::vector<at::Tensor> b;  // every B [out_i, r_i]
  };

  // `adapters`: n A's then n B's (FusedProjection::Adapters()).
  Casts Get(at::TensorList adapters, at::ScalarType dtype);

  // For casting many caches' adapters in one multi-tensor copy (FusedProjection::CastTogether):
  // when this cache's entry for `adapters` in `dtype` is stale, and every adapter is a leaf of
  // another dtype, allocates the casts, makes them the entry and appends each (cast, source) pair
  // to *to and *from. The caller must then copy *from into *to before anything reads the entry.
  void Plan(at::TensorList adapters, at::ScalarType dtype, std::vector<at::Tensor>* to,
            std::vector<at::Tensor>* from);

  // Ends every cache's entries: the trainer calls it as each optimizer step begins.
  static void NewStep();

  // Entries filled so far (casts done), for tests.
  int64_t fills() const;

 private:
  static Casts Cast(at::TensorList adapters, at::ScalarType dtype);
  bool Matches(at::TensorList adapters, at::ScalarType dtype) const;
  // Makes `casts` the entry for `adapters` in `dtype` (the mutex held).
  void Remember(at::TensorList adapters, at::ScalarType dtype, Casts casts);

  mutable std::mutex mutex_;
  std::vector<at::Tensor> sources_;
  std::vector<const void*> data_;
  std::vector<int64_t> versions_;
  uint64_t step_ = 0;  // of NewStep()
  at::ScalarType dtype_ = at::kFloat;
  Casts casts_;
  int64_t fills_ = 0;
};

}  // namespace qlorad::trainer
