// Objects carried through an autograd context from a Function's forward to its backward.
// ctx->saved_data holds IValues only, so:
//  - a borrowed object (one that outlives every graph built through it: a model's layer function,
//    a frozen weight's source, an fsdp unit) travels as its address, an int64;
//  - an object the graph must keep alive travels as a capsule holding a reference.
// One place for both, so the casts are written once and the lifetime rule is stated once.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace qlorad::trainer {

template <typename T>
void SaveBorrowed(torch::autograd::AutogradContext* ctx, const char* key, T* object) {
  ctx->saved_data[key] = static_cast<int64_t>(reinterpret_cast<intptr_t>(object));
}

template <typename T>
T* LoadBorrowed(torch::autograd::AutogradContext* ctx, const char* key) {
  return reinterpret_cast<T*>(static_cast<intptr_t>(ctx->saved_data[key].toInt()));
}

// T derives from c10::intrusive_ptr_target.
template <typename T>
void SaveOwned(torch::autograd::AutogradContext* ctx, const char* key,
               const c10::intrusive_ptr<T>& object) {
  ctx->saved_data[key] = at::IValue::make_capsule(object);
}

template <typename T>
c10::intrusive_ptr<T> LoadOwned(torch::autograd::AutogradContext* ctx, const char* key) {
  return c10::static_intrusive_pointer_cast<T>(ctx->saved_data[key].toCapsule());
}

}  // namespace qlorad::trainer
