#include "worker/trainer/model/adapter_cast_cache.h"

namespace qlorad::trainer {

namespace {

std::atomic<uint64_t> current_step{1};

}  // namespace

void AdapterCastCache::NewStep() {
  current_step.fetch_add(1);
}

AdapterCastCache::Casts AdapterCastCache::Cast(at::TensorList adapters, at::ScalarType dtype) {
  const size_t n = adapters.size() / 2;
  Casts casts;
  const at::TensorList a = adapters.slice(0, n);
  casts.stacked_a = (n == 1 ? a[0] : at::cat(a)).to(dtype);
  for (size_t i = 0; i < n; ++i) casts.b.push_back(adapters[n + i].to(dtype));
  return casts;
}

bool AdapterCastCache::Matches(at::TensorList adapters, at::ScalarType dtype) const {
  if (step_ != current_step.load() || dtype != dtype_ || adapters.size() != sources_.size()) {
    return false;
  }
  for (size_t i = 0; i < adapters.size(); ++i) {
    const at::Tensor& t = adapters[i];
    if (!t.is_same(sources_[i]) || t.data_ptr() != data_[i] || t._version() != versions_[i]) {
      return false;
    }
  }
  return true;
}

AdapterCastCache::Casts AdapterCastCache::Get(at::TensorList adapters, at::ScalarType dtype) {
  bool cacheable = true;
  for (const at::Tensor& t : adapters) cacheable = cacheable && t.is_leaf();
  if (!cacheable) return Cast(adapters, dtype);
  const std::lock_guard<std::mutex> lock(mutex_);
  if (!Matches(adapters, dtype)) {
    // Cast outside autograd's view: the copies are constants of this step, not graph nodes.
    const at::NoGradGuard no_grad;
    casts_ = Cast(adapters, dtype);
    sources_.assign(adapters.begin(), adapters.end());
    data_.clear();
    versions_.clear();
    for (const at::Tensor& t : adapters) {
      data_.push_back(t.data_ptr());
      versions_.push_back(t._version());
    }
    dtype_ = dtype;
    step_ = current_step.load();
    ++fills_;
  }
  return casts_;
}

int64_t AdapterCastCache::fills() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return fills_;
}

}  // namespace qlorad::trainer
