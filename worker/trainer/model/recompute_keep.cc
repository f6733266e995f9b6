#include "worker/trainer/model/recompute_keep.h"

namespace qlorad::trainer {

namespace {

thread_local RecomputeKeep* current = nullptr;

}  // namespace

void RecomputeKeep::Keep(at::TensorList tensors) {
  TORCH_CHECK(!replaying_, "RecomputeKeep::Keep while replaying");
  kept_.insert(kept_.end(), tensors.begin(), tensors.end());
}

std::vector<at::Tensor> RecomputeKeep::Next(size_t count, const char* what) {
  TORCH_CHECK(replaying_, "RecomputeKeep::Next while recording");
  TORCH_CHECK(next_ + count <= kept_.size(), what, ": the recompute asks for kept tensors ", next_,
              "..", next_ + count - 1, " of the ", kept_.size(), " its forward kept");
  std::vector<at::Tensor> next(kept_.begin() + next_, kept_.begin() + next_ + count);
  next_ += count;
  return next;
}

std::vector<at::Tensor> RecomputeKeep::Kept() && {
  if (replaying_) return {kept_.begin() + next_, kept_.end()};
  return std::move(kept_);
}

RecomputeKeep* CurrentRecomputeKeep() {
  return current;
}

RecomputeKeep* CurrentRecomputeKeep(bool KeptParts::*part) {
  return current != nullptr && current->parts().*part ? current : nullptr;
}

RecomputeKeepScope::RecomputeKeepScope(RecomputeKeep* keep) : outer_(current) {
  current = keep;
}

RecomputeKeepScope::~RecomputeKeepScope() {
  current = outer_;
}

}  // namespace qlorad::trainer
