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

void AdapterCastCache::Remember(at::TensorList adapters, at::ScalarType dtype, Casts casts) {
  casts_ = std::move(casts);
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

AdapterCastCache::Casts AdapterCastCache::Get(at::TensorList adapters, at::ScalarType dtype) {
  bool cacheable = true;
  for (const at::Tensor& t : adapters) cacheable = cacheable && t.is_leaf();
  if (!cacheable) return Cast(adapters, dtype);
  const std::lock_guard<std::mutex> lock(mutex_);
  if (!Matches(adapters, dtype)) {
    // Cast outside autograd's view: the copies are constants of this step, not graph nodes.
    const at::NoGradGuard no_grad;
    Remember(adapters, dtype, Cast(adapters, dtype));
  }
  return casts_;
}

void AdapterCastCache::Plan(at::TensorList adapters, at::ScalarType dtype,
                            std::vector<at::Tensor>* to, std::vector<at::Tensor>* from) {
  if (adapters.empty()) return;
  for (const at::Tensor& t : adapters) {
    if (!t.is_leaf() || t.scalar_type() == dtype) return;  // not cached, or nothing to cast
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  if (Matches(adapters, dtype)) return;
  const at::NoGradGuard no_grad;
  const size_t n = adapters.size() / 2;
  int64_t rows = 0;
  for (size_t i = 0; i < n; ++i) rows += adapters[i].size(0);
  Casts casts;
  casts.stacked_a = at::empty({rows, adapters[0].size(1)}, adapters[0].options().dtype(dtype));
  int64_t row = 0;
  for (size_t i = 0; i < n; ++i) {
    to->push_back(casts.stacked_a.narrow(0, row, adapters[i].size(0)));
    from->push_back(adapters[i]);
    row += adapters[i].size(0);
  }
  for (size_t i = 0; i < n; ++i) {
    casts.b.push_back(at::empty_like(adapters[n + i], adapters[n + i].options().dtype(dtype)));
    to->push_back(casts.b.back());
    from->push_back(adapters[n + i]);
  }
  Remember(adapters, dtype, std::move(casts));
}

int64_t AdapterCastCache::fills() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return fills_;
}

}  // namespace qlorad::trainer
