#include "worker/trainer/parallel/activation_recompute.h"

#include <ATen/Context.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "worker/trainer/model/graph_only_forward.h"
#include "worker/trainer/runtime/autograd_context.h"

namespace qlorad::trainer {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

thread_local bool recomputing = false;

// Marks this thread as recomputing while it lives.
class RecomputeScope {
 public:
  RecomputeScope() : outer_(recomputing) { recomputing = true; }
  ~RecomputeScope() { recomputing = outer_; }
  RecomputeScope(const RecomputeScope&) = delete;
  RecomputeScope& operator=(const RecomputeScope&) = delete;

 private:
  bool outer_;
};

// The default generators a function computing on `device` draws from: the CPU's always (CPU
// tensors, and host-side draws of CUDA code), the device's own when it is a GPU.
std::vector<at::Generator> DefaultGenerators(at::Device device) {
  std::vector<at::Generator> generators = {at::globalContext().defaultGenerator(at::kCPU)};
  if (device.is_cuda()) generators.push_back(at::globalContext().defaultGenerator(device));
  return generators;
}

std::vector<at::Tensor> GetStates(std::vector<at::Generator>& generators) {
  std::vector<at::Tensor> states;
  for (at::Generator& generator : generators) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    states.push_back(generator.get_state());
  }
  return states;
}

void SetStates(std::vector<at::Generator>& generators, const std::vector<at::Tensor>& states) {
  for (size_t i = 0; i < generators.size(); ++i) {
    std::lock_guard<std::mutex> lock(generators[i].mutex());
    generators[i].set_state(states[i]);
  }
}

// Puts the generators in the states of the checkpointed forward while it lives, then back where
// they were: the recompute draws the forward's masks, and the draws after backward do not
// depend on whether checkpointing was on.
class ReplayedRng {
 public:
  ReplayedRng(at::Device device, const std::vector<at::Tensor>& forward_states)
      : generators_(DefaultGenerators(device)), current_(GetStates(generators_)) {
    SetStates(generators_, forward_states);
  }
  ~ReplayedRng() { SetStates(generators_, current_); }
  ReplayedRng(const ReplayedRng&) = delete;
  ReplayedRng& operator=(const ReplayedRng&) = delete;

 private:
  std::vector<at::Generator> generators_;
  std::vector<at::Tensor> current_;
};

// The extras as the function takes them: `given` (the defined ones, which autograd can hold) with
// an undefined tensor put back at each position of `undefined_at`.
std::vector<at::Tensor> Extras(at::TensorList given, const std::vector<int64_t>& undefined_at) {
  std::vector<at::Tensor> extras(given.size() + undefined_at.size());
  size_t next_given = 0, next_undefined = 0;  // undefined_at is ascending
  for (size_t i = 0; i < extras.size(); ++i) {
    if (next_undefined < undefined_at.size() &&
        undefined_at[next_undefined] == static_cast<int64_t>(i)) {
      ++next_undefined;
    } else {
      extras[i] = given[next_given++];
    }
  }
  return extras;
}

// The keys under which an autograd context holds the handle of an offloaded kept tensor.
std::string KeptKey(size_t i) {
  return "kept" + std::to_string(i);
}

// Inputs: x, each defined extra, where the undefined ones go, the anchor (when x needs no
// gradient), the function, the options. Only x takes a gradient; backward returns none for the
// others.
struct RecomputeFunction : torch::autograd::Function<RecomputeFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList extras,
                            const std::vector<int64_t>& undefined_at,
                            const std::optional<at::Tensor>& /*anchor*/, const LayerFunction* fn,
                            const RecomputeOptions* options) {
    SaveBorrowed(ctx, "fn", fn);
    ctx->saved_data["undefined_at"] = undefined_at;
    if (options->draws_random) {
      std::vector<at::Generator> generators = DefaultGenerators(x.device());
      ctx->saved_data["rng"] = GetStates(generators);
    }
    // Offloaded, x is kept off the device and an undefined tensor holds its place. Its copy out
    // starts before fn runs, so it overlaps fn's compute.
    LayerOffloaders* offload = options->offload;
    SaveBorrowed(ctx, "offload", offload);
    SaveBorrowed(ctx, "fetch_previous", options->fetch_previous);
    ctx->saved_data["layer"] = options->layer;
    if (offload != nullptr) SaveOwned(ctx, "x", offload->Kind(0).Put(options->layer, x));
    std::optional<RecomputeKeep> keep;
    if (options->keep.any()) keep = RecomputeKeep::Recording(options->keep);
    at::Tensor y;
    {
      // Function::apply already runs forward without grad; this is the point of checkpointing,
      // so it is stated here too: nothing inside fn is recorded, so nothing inside it is kept
      // but what it keeps on purpose.
      at::NoGradGuard no_graph;
      const RecomputeKeepScope scope(keep ? &*keep : nullptr);
      y = (*fn)(x, Extras(extras, undefined_at));
    }
    variable_list saved = {offload != nullptr ? at::Tensor() : x};
    saved.insert(saved.end(), extras.begin(), extras.end());
    // What fn kept: the large ones on the device offloaded as x is (kind i + 1 for the i-th), the
    // rest saved after the extras.
    if (keep) {
      const std::vector<at::Tensor> kept = std::move(*keep).Kept();
      std::vector<int64_t> moved;
      for (size_t i = 0; i < kept.size(); ++i) {
        if (offload != nullptr && offload->Moves(kept[i], x)) {
          SaveOwned(ctx, KeptKey(i).c_str(), offload->Kind(i + 1).Put(options->layer, kept[i]));
          moved.push_back(static_cast<int64_t>(i));
        } else {
          saved.push_back(kept[i]);
        }
      }
      ctx->saved_data["kept"] = static_cast<int64_t>(kept.size());
      ctx->saved_data["kept_parts"] =
          std::vector<int64_t>{options->keep.attention ? 1 : 0, options->keep.mlp ? 1 : 0};
      ctx->saved_data["kept_moved"] = moved;
    }
    ctx->saved_data["extras"] = static_cast<int64_t>(extras.size());
    ctx->save_for_backward(saved);
    return y;
  }

  // What forward's fn kept, back on the device, in the order fn kept it.
  static std::vector<at::Tensor> Kept(AutogradContext* ctx, at::TensorList saved,
                                      LayerOffloaders* offload) {
    const int64_t count = ctx->saved_data["kept"].toInt();
    const std::vector<int64_t> moved = ctx->saved_data["kept_moved"].toIntVector();
    std::vector<at::Tensor> kept;
    size_t next_moved = 0, next_saved = 0;
    for (int64_t i = 0; i < count; ++i) {
      if (next_moved < moved.size() && moved[next_moved] == i) {
        ++next_moved;
        kept.push_back(
            offload->Kind(i + 1).Take(LoadOwned<OffloadedInput>(ctx, KeptKey(i).c_str())));
      } else {
        kept.push_back(saved[next_saved++]);
      }
    }
    return kept;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto* fn = LoadBorrowed<const LayerFunction>(ctx, "fn");
    const variable_list saved = ctx->get_saved_variables();
    auto* offload = LoadBorrowed<LayerOffloaders>(ctx, "offload");
    if (auto* previous = LoadBorrowed<LayerOffloaders>(ctx, "fetch_previous")) {
      previous->Prefetch(ctx->saved_data["layer"].toInt() - 1);
    }
    const at::Tensor input =
        offload != nullptr ? offload->Kind(0).Take(LoadOwned<OffloadedInput>(ctx, "x")) : saved[0];
    // A leaf of its own, so the inner backward stops here and leaves its gradient in .grad.
    at::Tensor x = input.detach().requires_grad_(ctx->needs_input_grad(0));
    const int64_t extra_count = ctx->saved_data["extras"].toInt();
    const std::vector<at::Tensor> extras = Extras(at::TensorList(saved).slice(1, extra_count),
                                                  ctx->saved_data["undefined_at"].toIntVector());
    std::optional<RecomputeKeep> keep;
    if (ctx->saved_data.count("kept") != 0) {
      const std::vector<int64_t> parts = ctx->saved_data["kept_parts"].toIntVector();
      keep = RecomputeKeep::Replaying(
          {.attention = parts[0] != 0, .mlp = parts[1] != 0},
          Kept(ctx, at::TensorList(saved).slice(1 + extra_count), offload));
    }
    at::Tensor y;
    {
      std::optional<ReplayedRng> rng;
      if (ctx->saved_data.count("rng") != 0) {
        rng.emplace(x.device(), ctx->saved_data["rng"].toTensorVector());
      }
      RecomputeScope recompute;
      const RecomputeKeepScope replay(keep ? &*keep : nullptr);
      // y's values are never read, only its graph: the layer may skip its last GEMM.
      GraphOnlyForward graph_only;
      at::AutoGradMode grad(true);  // the engine runs backward with grad off
      y = (*fn)(x, extras);
    }
    if (keep) {
      TORCH_CHECK(std::move(*keep).Kept().empty(),
                  "activation recompute: the recompute left kept tensors unused");
    }
    // Reentrant: accumulates into every leaf the recomputed graph reaches (LoRA A and B), as the
    // non-checkpointed backward would have.
    if (y.requires_grad()) torch::autograd::backward({y}, {grads[0]});
    // x, the defined extras, undefined_at, anchor, function, options
    variable_list out(1 + extra_count + 4);
    if (x.requires_grad()) out[0] = x.grad();
    return out;
  }
};

bool HasTrainableParameter(const torch::nn::Module& module) {
  for (const at::Tensor& p : module.parameters()) {
    if (p.requires_grad()) return true;
  }
  return false;
}

}  // namespace

at::Tensor RecomputeInBackward(const LayerFunction& fn, const at::Tensor& x, at::TensorList extras,
                               const RecomputeOptions& options) {
  for (const at::Tensor& extra : extras) {
    TORCH_CHECK(!extra.defined() || !extra.requires_grad(),
                "RecomputeInBackward: an extra input requires grad; only x is differentiated");
  }
  // The leaves inside fn are out of autograd's sight until the recompute. If no input required
  // grad, the output would not join the graph and backward would never come back for them (the
  // first decoder layer's input, a frozen embedding's output): an empty leaf that does links it.
  std::optional<at::Tensor> anchor;
  if (!x.requires_grad()) {
    anchor = at::empty({0}, x.options().dtype(at::kFloat)).requires_grad_(true);
  }
  // Autograd takes no undefined input (an absent attention mask): those travel as positions.
  std::vector<at::Tensor> defined;
  std::vector<int64_t> undefined_at;
  for (size_t i = 0; i < extras.size(); ++i) {
    if (extras[i].defined()) {
      defined.push_back(extras[i]);
    } else {
      undefined_at.push_back(static_cast<int64_t>(i));
    }
  }
  return RecomputeFunction::apply(x, at::TensorList(defined), undefined_at, anchor, &fn, &options);
}

void ApplyActivationRecompute(LlamaModel& model, bool offload, KeptParts keep, bool draws_random,
                              int64_t resident_layers) {
  // Shared by the runner's copies (std::function copies it), alive as long as the runner.
  auto offloaders = offload ? std::make_shared<LayerOffloaders>() : nullptr;
  const int64_t layers = model->config().num_hidden_layers;
  const int64_t resident_from =
      std::max<int64_t>(0, layers - std::max<int64_t>(0, resident_layers));
  model->SetLayerRunner([offloaders, keep, draws_random, resident_from](
                            int64_t index, const LlamaDecoderLayerImpl& layer,
                            const LayerFunction& function, const at::Tensor& x,
                            at::TensorList extras) {
    if (at::GradMode::is_enabled() && (x.requires_grad() || HasTrainableParameter(layer))) {
      const bool resident = index >= resident_from;
      return RecomputeInBackward(
          function, x, extras,
          {.offload = resident ? nullptr : offloaders.get(),
           .layer = index,
           .keep = keep,
           .draws_random = draws_random,
           .fetch_previous = index == resident_from ? offloaders.get() : nullptr});
    }
    return function(x, extras);
  });
}

bool InActivationRecompute() {
  return recomputing;
}

}  // namespace qlorad::trainer
