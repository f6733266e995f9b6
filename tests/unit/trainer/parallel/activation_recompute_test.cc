// Activation recompute (worker/trainer/parallel/activation_recompute.h) against the same
// computation without it. The recompute runs the same fp32 CPU kernels on the same inputs, and here
// the results come out bitwise equal. The tolerance, 1e-6 of the largest reference value (about ten
// fp32 ulps), leaves room only for a kernel that picks another algorithm when grad mode is off
// (the checkpointed forward); a lost or doubled gradient, or another dropout mask, is off by O(1).
#include "worker/trainer/parallel/activation_recompute.h"

#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "worker/trainer/model/fused_layers.h"
#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/model/qlora.h"
#include "worker/trainer/model/tiny_model.h"
#include "worker/trainer/parallel/communicator.h"
#include "worker/trainer/parallel/parallelize.h"

namespace qlorad::trainer {
namespace {

constexpr double kRelativeTolerance = 1e-6;

void ExpectClose(const at::Tensor& actual, const at::Tensor& expected, const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what;
  ASSERT_TRUE(expected.defined()) << what;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const double scale = expected.abs().max().item<double>();
  ASSERT_GT(scale, 0.0) << what << ": the reference is all zeros, the comparison is vacuous";
  EXPECT_LE((actual - expected).abs().max().item<double>(), kRelativeTolerance * scale) << what;
}

// tanh(dropout(x) W) * scale, with W a leaf the checkpoint never sees as an input.
struct Toy {
  at::Tensor w = at::randn({6, 5}, at::kFloat).requires_grad_(true);
  at::Tensor scale = at::rand({5}, at::kFloat) + 0.5;
  double p = 0.0;
  std::vector<bool> recomputing;  // InActivationRecompute() at each call

  at::Tensor operator()(const at::Tensor& x, at::TensorList extras) {
    recomputing.push_back(InActivationRecompute());
    return at::tanh(at::matmul(at::dropout(x, p, /*train=*/p > 0), w)) * extras[0];
  }
};

struct ToyGrads {
  at::Tensor y, x_grad, w_grad, after;  // `after`: a draw from the generator after backward
};

ToyGrads RunToy(Toy& toy, const at::Tensor& x_value, bool x_requires_grad, bool checkpoint,
                bool draws_random = true) {
  at::Tensor x = x_value.clone().requires_grad_(x_requires_grad);
  toy.w.mutable_grad() = at::Tensor();
  torch::manual_seed(11);
  const LayerFunction fn = [&toy](const at::Tensor& in, at::TensorList extras) {
    return toy(in, extras);
  };
  at::Tensor y = checkpoint ? RecomputeInBackward(fn, x, {toy.scale},
                                                  {.keep = {}, .draws_random = draws_random})
                            : fn(x, {toy.scale});
  (y * at::arange(y.numel(), at::kFloat).view_as(y).cos()).sum().backward();
  return {y.detach(), x_requires_grad ? x.grad() : at::Tensor(), toy.w.grad(), at::rand({4})};
}

TEST(ActivationRecomputeTest, GradientsAndDropoutMasksEqualTheDirectComputation) {
  torch::manual_seed(3);
  Toy toy;
  const at::Tensor x = at::randn({4, 6});
  for (const double p : {0.0, 0.3}) {
    toy.p = p;
    for (const bool x_requires_grad : {true, false}) {
      const std::string what = "p " + std::to_string(p) + (x_requires_grad ? " x" : " frozen x");
      const ToyGrads direct = RunToy(toy, x, x_requires_grad, false);
      toy.recomputing.clear();
      const ToyGrads checkpointed = RunToy(toy, x, x_requires_grad, true);
      // Once in forward, once again in backward, and only the second call is a recompute.
      EXPECT_EQ(toy.recomputing, (std::vector<bool>{false, true})) << what;
      EXPECT_FALSE(InActivationRecompute());
      ExpectClose(checkpointed.y, direct.y, what + ": y");
      ExpectClose(checkpointed.w_grad, direct.w_grad, what + ": W grad");
      if (x_requires_grad) ExpectClose(checkpointed.x_grad, direct.x_grad, what + ": x grad");
      // The generator is back where the direct run left it.
      EXPECT_TRUE(checkpointed.after.equal(direct.after)) << what;
    }
  }
}

// draws_random = false, for functions without dropout (what lets a CUDA graph record the step):
// the generators are left alone. Without dropout the gradients are the direct ones all the same;
// with it (a caller's mistake), the recompute would draw other masks: the flag is what replays
// them.
TEST(ActivationRecomputeTest, WithoutDrawingRandomNumbersTheGeneratorsAreLeftAlone) {
  torch::manual_seed(5);
  Toy toy;
  const at::Tensor x = at::randn({4, 6});
  const ToyGrads direct = RunToy(toy, x, true, false);
  const ToyGrads alone = RunToy(toy, x, true, true, /*draws_random=*/false);
  ExpectClose(alone.w_grad, direct.w_grad, "no dropout: W grad");
  ExpectClose(alone.x_grad, direct.x_grad, "no dropout: x grad");
  toy.p = 0.3;
  const ToyGrads dropped = RunToy(toy, x, true, false);
  const ToyGrads replayed = RunToy(toy, x, true, true, /*draws_random=*/true);
  const ToyGrads redrawn = RunToy(toy, x, true, true, /*draws_random=*/false);
  ExpectClose(replayed.w_grad, dropped.w_grad, "dropout, replayed: W grad");
  EXPECT_FALSE(at::allclose(redrawn.w_grad, dropped.w_grad));
}

TEST(ActivationRecomputeTest, ForwardKeepsNoGraphOfTheFunction) {
  Toy toy;
  const at::Tensor x = at::randn({4, 6}).requires_grad_(true);
  const LayerFunction fn = [&toy](const at::Tensor& in, at::TensorList extras) {
    return toy(in, extras);
  };
  const at::Tensor y = RecomputeInBackward(fn, x, {toy.scale});
  // One node, the checkpoint's, with edges to x and to the extra (none: it takes no gradient):
  // tanh, matmul and mul were not recorded, and W is reached only by the recompute.
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_NE(y.grad_fn()->name().find("RecomputeFunction"), std::string::npos)
      << y.grad_fn()->name();
  ASSERT_EQ(y.grad_fn()->next_edges().size(), 2u);
  EXPECT_EQ(y.grad_fn()->next_edges()[0].function->name(), "torch::autograd::AccumulateGrad");
  EXPECT_FALSE(y.grad_fn()->next_edges()[1].is_valid());
  // Under no grad it is the plain function.
  at::NoGradGuard no_grad;
  EXPECT_EQ(RecomputeInBackward(fn, x, {toy.scale}).grad_fn(), nullptr);
}

TEST(ActivationRecomputeTest, ExtrasThatRequireGradAreRefused) {
  Toy toy;
  const LayerFunction fn = [&toy](const at::Tensor& in, at::TensorList extras) {
    return toy(in, extras);
  };
  const at::Tensor scale = toy.scale.clone().requires_grad_(true);
  EXPECT_THROW(RecomputeInBackward(fn, at::randn({4, 6}), {scale}), c10::Error);
}

// exp(a) the way attention makes its output: a Function whose backward reads that output, which a
// checkpointed forward keeps (model/recompute_keep.h) and its recompute takes instead of
// computing it again. `computed` counts the exps actually run.
struct KeptExp : torch::autograd::Function<KeptExp> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a,
                            int* computed) {
    at::Tensor out;
    RecomputeKeep* keep = CurrentRecomputeKeep(&KeptParts::attention);
    if (keep != nullptr && keep->replaying()) {
      out = keep->Next(1, "KeptExp")[0];
    } else {
      out = a.exp();
      ++*computed;
      if (keep != nullptr) keep->Keep({out});
    }
    ctx->save_for_backward({out});
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {grads[0] * ctx->get_saved_variables()[0], at::Tensor()};
  }
};

// Two layers y = exp(x W_i) * scale, as decoder layers 0 and 1.
struct KeepingLayers {
  at::Tensor w0 = (at::randn({6, 6}, at::kFloat) * 0.3).requires_grad_(true);
  at::Tensor w1 = (at::randn({6, 6}, at::kFloat) * 0.3).requires_grad_(true);
  at::Tensor scale = at::rand({6}, at::kFloat) + 0.5;
  int computed = 0;
  bool replay_asks = true;  // false: the recompute never asks for what was kept (a bug)

  LayerFunction Layer(const at::Tensor& w) {
    return [this, w](const at::Tensor& x, at::TensorList extras) {
      const at::Tensor a = at::matmul(x, w);
      RecomputeKeep* keep = CurrentRecomputeKeep();
      if (!replay_asks && keep != nullptr && keep->replaying()) return a.exp() * extras[0];
      return KeptExp::apply(a, &computed) * extras[0];
    };
  }
};

struct KeepingRun {
  at::Tensor y, x_grad, w0_grad, w1_grad;
  int computed = 0;
};

KeepingRun RunKeeping(KeepingLayers& layers, const at::Tensor& x_value, bool checkpoint, bool keep,
                      LayerOffloaders* offload) {
  at::Tensor x = x_value.clone().requires_grad_(true);
  layers.w0.mutable_grad() = at::Tensor();
  layers.w1.mutable_grad() = at::Tensor();
  layers.computed = 0;
  const LayerFunction f0 = layers.Layer(layers.w0), f1 = layers.Layer(layers.w1);
  at::Tensor y;
  if (checkpoint) {
    const KeptParts parts{.attention = keep};
    y = RecomputeInBackward(f0, x, {layers.scale}, {offload, 0, parts});
    y = RecomputeInBackward(f1, y, {layers.scale}, {offload, 1, parts});
  } else {
    y = f1(f0(x, {layers.scale}), {layers.scale});
  }
  (y * at::arange(y.numel(), at::kFloat).view_as(y).sin()).sum().backward();
  return {y.detach(), x.grad(), layers.w0.grad(), layers.w1.grad(), layers.computed};
}

TEST(ActivationRecomputeTest, KeptTensorsSpareTheRecomputeTheirWorkAndChangeNoGradient) {
  torch::manual_seed(4);
  KeepingLayers layers;
  const at::Tensor x = at::randn({4, 6});
  const KeepingRun direct = RunKeeping(layers, x, false, false, nullptr);
  EXPECT_EQ(direct.computed, 2);
  // Without keeping, each layer's exp runs in forward and again in its recompute.
  EXPECT_EQ(RunKeeping(layers, x, true, false, nullptr).computed, 4);
  // Kept: on the device, and offloaded with pieces small enough that the [4, 6] fp32 outputs
  // (96 bytes) move too, each kind fetched one layer ahead.
  LayerOffloaders offloaders(/*min_piece=*/16);
  for (LayerOffloaders* offload : {static_cast<LayerOffloaders*>(nullptr), &offloaders}) {
    const std::string what = offload != nullptr ? "kept, offloaded: " : "kept: ";
    const KeepingRun kept = RunKeeping(layers, x, true, true, offload);
    EXPECT_EQ(kept.computed, 2) << what;
    ExpectClose(kept.y, direct.y, what + "y");
    ExpectClose(kept.x_grad, direct.x_grad, what + "x grad");
    ExpectClose(kept.w0_grad, direct.w0_grad, what + "W0 grad");
    ExpectClose(kept.w1_grad, direct.w1_grad, what + "W1 grad");
  }
  EXPECT_EQ(CurrentRecomputeKeep(), nullptr);
}

TEST(ActivationRecomputeTest, ARecomputeThatLeavesKeptTensorsUnusedFails) {
  KeepingLayers layers;
  layers.replay_asks = false;
  try {
    RunKeeping(layers, at::randn({4, 6}), true, true, nullptr);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("the recompute left kept tensors unused"),
              std::string::npos)
        << e.what();
  }
}

TEST(RecomputeKeepTest, AReplayThatAsksForMoreThanWasKeptNamesTheCaller) {
  RecomputeKeep keep = RecomputeKeep::Replaying({.attention = true}, {at::ones({2})});
  EXPECT_EQ(keep.Next(1, "attention")[0].numel(), 2);
  try {
    keep.Next(2, "attention");
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "attention: the recompute asks for kept tensors 1..2 of the 1 its forward kept"),
              std::string::npos)
        << e.what();
  }
}

// The tiny model (2 layers, GQA), fp32 on the CPU, LoRA on every projection with B drawn nonzero
// so that every A has a gradient too.
LlamaModel TinyModelWithLora(double dropout) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
  auto model = BuildLlamaModel(
      TinyLlamaConfig(),
      [&](const std::string& name, const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
        const bool norm = name.find("norm") != std::string::npos;
        at::Tensor t = at::randn(shape, gen, at::kFloat) * (norm ? 0.1 : 0.2);
        return norm ? t + 1.0 : t;
      },
      at::kCPU, at::kFloat);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  LoraSpec lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.dropout = dropout;
  EXPECT_TRUE(
      ApplyQLora(*model, QuantizationSpec{QuantizationType::kNone, true, 64}, lora, /*seed=*/3)
          .ok());
  at::NoGradGuard no_grad;
  for (const auto& [name, linear] : (*model)->NamedLinears()) {
    linear->lora_b().copy_(at::randn(linear->lora_b().sizes(), gen, at::kFloat) * 0.1);
  }
  return *model;
}

struct Batch {
  at::Tensor ids, labels, positions;
};

// Two rows of 16 tokens; packed: the first row holds three documents.
Batch MakeBatch(bool packed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const int64_t vocab = TinyLlamaConfig().vocab_size;
  Batch b{at::randint(vocab, {2, 16}, gen, at::kLong), at::randint(vocab, {2, 16}, gen, at::kLong),
          at::Tensor()};
  if (packed) {
    std::vector<int64_t> positions;
    for (int64_t length : {5, 7, 4}) {
      for (int64_t p = 0; p < length; ++p) positions.push_back(p);
    }
    for (int64_t p = 0; p < 16; ++p) positions.push_back(p);
    b.positions = at::tensor(positions, at::kLong).view({2, 16});
  }
  return b;
}

at::Tensor Loss(LlamaModel& model, const Batch& b) {
  const at::Tensor hidden = model->forward(b.ids, b.positions);
  return at::cross_entropy_loss(model->Logits(hidden).view({-1, model->config().vocab_size}),
                                b.labels.view({-1}));
}

struct Step {
  at::Tensor loss;
  std::vector<at::Tensor> grads;
};

Step LossAndGrads(LlamaModel& model, const Batch& b, bool checkpoint, bool offload = false,
                  int64_t resident_layers = 0) {
  if (checkpoint) {
    ApplyActivationRecompute(model, offload, {}, /*draws_random=*/true, resident_layers);
  } else {
    model->SetLayerRunner({});
  }
  for (at::Tensor& p : LoraParameters(model)) p.mutable_grad() = at::Tensor();
  torch::manual_seed(5);  // the dropout masks
  at::Tensor loss = Loss(model, b);
  loss.backward();
  Step step{loss.detach(), {}};
  for (const at::Tensor& p : LoraParameters(model)) step.grads.push_back(p.grad().clone());
  return step;
}

class LlamaCheckpointingTest : public ::testing::TestWithParam<std::tuple<double, bool>> {};

TEST_P(LlamaCheckpointingTest, LossAndEveryLoraGradientEqualTheUncheckpointedModel) {
  const auto [dropout, packed] = GetParam();
  LlamaModel model = TinyModelWithLora(dropout);
  const Batch b = MakeBatch(packed);
  const Step direct = LossAndGrads(model, b, false);
  const Step checkpointed = LossAndGrads(model, b, true);
  // The inputs kept in "host" memory (on the CPU, copies): the same computation again; and with
  // the last layer's left on the device.
  const Step offloaded = LossAndGrads(model, b, true, /*offload=*/true);
  const Step resident = LossAndGrads(model, b, true, /*offload=*/true, /*resident_layers=*/1);
  const auto names = model->NamedLinears();
  ASSERT_EQ(direct.grads.size(), 2 * names.size());
  for (const auto& [run, what] :
       {std::pair{&checkpointed, "checkpointed "}, std::pair{&offloaded, "offloaded "},
        std::pair{&resident, "offloaded but the last layer "}}) {
    ExpectClose(run->loss, direct.loss, std::string(what) + "loss");
    for (size_t i = 0; i < direct.grads.size(); ++i) {
      ExpectClose(run->grads[i], direct.grads[i],
                  what + names[i / 2].first + (i % 2 == 0 ? ".lora_A" : ".lora_B"));
    }
  }
  if (dropout > 0) {
    // Not vacuous: other masks give other gradients.
    torch::manual_seed(6);
    model->SetLayerRunner({});
    for (at::Tensor& p : LoraParameters(model)) p.mutable_grad() = at::Tensor();
    Loss(model, b).backward();
    EXPECT_GT((LoraParameters(model)[0].grad() - direct.grads[0]).abs().max().item<double>(),
              1e-3 * direct.grads[0].abs().max().item<double>());
  }
}

// Without a layer runner the model leaves each fused layer's output in two parts (h and the MLP's
// output) for the next norm's kernel to add, and the final norm adds the last two; a runner that
// just calls each layer gets whole layer outputs, summed by an add kernel. The same sums in the
// same dtype: the loss and every LoRA gradient are equal, not close.
TEST(LlamaModelTest, LayerOutputsInTwoPartsGiveTheWholeLayersLossAndGradients) {
  if (!FusedLayersAvailable(at::kCPU, at::kFloat)) GTEST_SKIP() << "built without qlorad_ops";
  LlamaModel model = TinyModelWithLora(0.0);
  const Batch b = MakeBatch(false);
  const Step parts = LossAndGrads(model, b, false);
  model->SetLayerRunner([](int64_t, const LlamaDecoderLayerImpl&, const LayerFunction& function,
                           const at::Tensor& x,
                           at::TensorList extras) { return function(x, extras); });
  for (at::Tensor& p : LoraParameters(model)) p.mutable_grad() = at::Tensor();
  at::Tensor loss = Loss(model, b);
  loss.backward();
  model->SetLayerRunner({});
  EXPECT_TRUE(at::equal(loss.detach(), parts.loss))
      << loss.item<double>() << " " << parts.loss.item<double>();
  const std::vector<at::Tensor> params = LoraParameters(model);
  ASSERT_EQ(params.size(), parts.grads.size());
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_TRUE(params[i].grad().defined()) << i;
    EXPECT_TRUE(at::equal(params[i].grad(), parts.grads[i]))
        << "parameter " << i << ": largest difference "
        << (params[i].grad() - parts.grads[i]).abs().max().item<double>();
  }
}

// A slice in autograd's graph costs its backward a tensor of zeros the size of what was sliced
// and a copy into it. o_proj is its fused projection's one layer: the attention hands its output
// whole, not as a slice of all of it.
TEST(LlamaModelTest, AttentionHandsItsOutputProjectionWhole) {
  if (!FusedLayersAvailable(at::kCPU, at::kFloat)) GTEST_SKIP() << "built without qlorad_ops";
  LlamaModel model = TinyModelWithLora(0.0);
  std::vector<std::string> grad_fns;
  model->SetLayerRunner([&](int64_t, const LlamaDecoderLayerImpl& layer,
                            const LayerFunction& function, const at::Tensor& x,
                            at::TensorList extras) {
    LlamaAttention attention = layer.self_attn;  // a handle: forward is not const
    grad_fns.push_back(attention->forward(x, extras[0], extras[1]).grad_fn()->name());
    return function(x, extras);
  });
  Loss(model, MakeBatch(false));
  model->SetLayerRunner({});
  ASSERT_EQ(grad_fns.size(), static_cast<size_t>(TinyLlamaConfig().num_hidden_layers));
  for (const std::string& name : grad_fns) {
    EXPECT_EQ(name.find("Slice"), std::string::npos) << name;
    EXPECT_NE(name.find("FusedProjectionFunction"), std::string::npos) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(DropoutAndPacking, LlamaCheckpointingTest,
                         ::testing::Combine(::testing::Values(0.0, 0.1), ::testing::Bool()));

// The MLP's gate|up kept for the recompute (KeptParts::mlp): on the CPU's fused path each layer
// keeps one [tokens, 2 x intermediate] tensor (offloaded here: the offloaders' pieces are small
// enough that it moves), ChunkedMlp's backward reads it instead of computing it again, and the loss
// and every LoRA gradient are those of the model without checkpointing. (Attention keeps nothing
// on the CPU: its SDPA path recomputes.)
TEST(LlamaCheckpointingTest, KeptGateUpGivesTheUncheckpointedGradients) {
  LlamaModel model = TinyModelWithLora(0.0);
  const Batch b = MakeBatch(false);
  const Step direct = LossAndGrads(model, b, false);

  LayerOffloaders offloaders(/*min_piece=*/16);
  std::vector<size_t> kept_per_layer;
  std::deque<LayerFunction>
      counted;  // the functions outlive the graph, as RecomputeInBackward asks
  model->SetLayerRunner([&](int64_t index, const LlamaDecoderLayerImpl& /*layer*/,
                            const LayerFunction& function, const at::Tensor& x,
                            at::TensorList extras) {
    counted.push_back([&function, &kept_per_layer](const at::Tensor& in, at::TensorList more) {
      at::Tensor y = function(in, more);
      RecomputeKeep* keep = CurrentRecomputeKeep();
      if (keep != nullptr && !keep->replaying()) kept_per_layer.push_back(keep->count());
      return y;
    });
    return RecomputeInBackward(counted.back(), x, extras, {&offloaders, index, {.mlp = true}});
  });
  for (at::Tensor& p : LoraParameters(model)) p.mutable_grad() = at::Tensor();
  at::Tensor loss = Loss(model, b);
  loss.backward();
  EXPECT_EQ(kept_per_layer, std::vector<size_t>(TinyLlamaConfig().num_hidden_layers, 1));
  ExpectClose(loss.detach(), direct.loss, "kept gate|up: loss");
  const std::vector<at::Tensor> params = LoraParameters(model);
  ASSERT_EQ(params.size(), direct.grads.size());
  for (size_t i = 0; i < params.size(); ++i) {
    ExpectClose(params[i].grad(), direct.grads[i],
                "kept gate|up: LoRA gradient " + std::to_string(i));
  }
  model->SetLayerRunner({});
}

TEST(LlamaCheckpointingTest, NoGradAndEvalForwardsAreUnchanged) {
  LlamaModel model = TinyModelWithLora(0.1);
  const Batch b = MakeBatch(true);
  model->eval();
  at::Tensor expected, actual;
  {
    at::NoGradGuard no_grad;
    model->SetLayerRunner({});
    expected = model->forward(b.ids, b.positions);
    ApplyActivationRecompute(model);
    actual = model->forward(b.ids, b.positions);
  }
  EXPECT_EQ(actual.grad_fn(), nullptr);
  EXPECT_TRUE(actual.equal(expected));
  // Grad mode on but evaluating: still checkpointed (the LoRA parameters require grad), same
  // values.
  ExpectClose(model->forward(b.ids, b.positions).detach(), expected, "eval with grad mode");
}

// fsdp over a world of one: the layer's recompute gathers it again and records the one LoRA
// gather whose backward reduce-scatters, so each LoRA gradient arrives once (a doubled one would
// be twice the reference).
class FsdpCheckpointingTest : public ::testing::TestWithParam<bool> {};

TEST_P(FsdpCheckpointingTest, ReducedLoraGradientsEqualTheUncheckpointedRun) {
  const Batch b = MakeBatch(true);
  std::vector<std::vector<at::Tensor>> grads;
  std::vector<at::Tensor> losses;
  for (const bool checkpoint : {false, true}) {
    LlamaModel model = TinyModelWithLora(0.1);
    ParallelSpec spec;
    spec.strategy = StrategyChoice::kFsdp;
    spec.reshard_after_forward = GetParam();
    auto fsdp = parallel::ApplyDataParallel(model, parallel::Strategy::kFsdp, spec,
                                            parallel::MakeLocalCommunicator(at::kCPU));
    ASSERT_TRUE(fsdp.ok()) << fsdp.status().ToString();
    if (checkpoint) ApplyActivationRecompute(model);
    torch::manual_seed(5);
    at::Tensor total = at::zeros({});
    for (int micro_batch = 0; micro_batch < 2; ++micro_batch) {  // grad_accum 2
      at::Tensor loss = Loss(model, b);
      loss.backward();
      total += loss.detach();
    }
    ASSERT_TRUE((*fsdp)->FinishBackward().ok());
    losses.push_back(total);
    grads.emplace_back();
    for (const at::Tensor& p : (*fsdp)->Parameters()) grads.back().push_back(p.grad());
  }
  ExpectClose(losses[1], losses[0], "loss");
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) {
    ExpectClose(grads[1][i], grads[0][i], "parameter " + std::to_string(i));
  }
}

INSTANTIATE_TEST_SUITE_P(ReshardAfterForward, FsdpCheckpointingTest, ::testing::Bool());

// The local stand-in for a world of one, adding up the bytes its all-gathers bring in.
class GatherCountingCommunicator : public parallel::Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return local_->backend(); }
  std::unique_ptr<parallel::Work> AllGather(at::Tensor& output, at::Tensor& input) override {
    gathered_bytes += static_cast<int64_t>(output.nbytes());
    return local_->AllGather(output, input);
  }
  std::unique_ptr<parallel::Work> ReduceScatterSum(at::Tensor& output, at::Tensor& input) override {
    return local_->ReduceScatterSum(output, input);
  }
  std::unique_ptr<parallel::Work> AllReduceSum(at::Tensor& tensor) override {
    return local_->AllReduceSum(tensor);
  }
  std::unique_ptr<parallel::Work> Broadcast(at::Tensor& tensor, int root) override {
    return local_->Broadcast(tensor, root);
  }
  std::unique_ptr<parallel::Work> Barrier() override { return local_->Barrier(); }

  int64_t gathered_bytes = 0;

 private:
  std::unique_ptr<parallel::Communicator> local_ = parallel::MakeLocalCommunicator(at::kCPU);
};

// On CUDA the autograd engine runs backward on a device thread, not the thread that ran forward,
// so the unit must read InActivationRecompute() on the thread that recomputes. Here backward runs
// on a thread of its own and the unit gathers exactly what it does when backward runs on the
// forward's thread: one more LoRA gather per layer than without checkpointing (plus at most the
// 8-byte alignment of the LoRA behind the frozen bytes). A recompute taken for a forward would
// free the unit after it and gather its frozen bytes again, far more than that.
TEST(FsdpCheckpointingThreadTest, BackwardOnAnotherThreadGathersAsOnTheForwardThread) {
  const Batch b = MakeBatch(true);
  int64_t lora_bytes = 0;
  auto gathered = [&](bool checkpoint, bool backward_on_another_thread) -> int64_t {
    LlamaModel model = TinyModelWithLora(0.1);
    ParallelSpec spec;
    spec.strategy = StrategyChoice::kFsdp;
    spec.reshard_after_forward = true;
    auto comm = std::make_shared<GatherCountingCommunicator>();
    auto fsdp = parallel::ApplyDataParallel(model, parallel::Strategy::kFsdp, spec, comm);
    EXPECT_TRUE(fsdp.ok()) << fsdp.status().ToString();
    if (!fsdp.ok()) return -1;
    lora_bytes = 0;
    for (const at::Tensor& p : (*fsdp)->Parameters()) lora_bytes += p.numel() * p.element_size();
    if (checkpoint) ApplyActivationRecompute(model);
    torch::manual_seed(5);
    const int64_t before = comm->gathered_bytes;
    at::Tensor loss = Loss(model, b);
    if (backward_on_another_thread) {
      std::thread([&loss] { loss.backward(); }).join();
    } else {
      loss.backward();
    }
    EXPECT_TRUE((*fsdp)->FinishBackward().ok());
    return comm->gathered_bytes - before;
  };
  const int64_t off = gathered(false, false);
  const int64_t on = gathered(true, false);
  EXPECT_GE(on - off, lora_bytes);
  EXPECT_LT(on - off, lora_bytes + 8);
  EXPECT_EQ(gathered(true, true), on);
}

}  // namespace
}  // namespace qlorad::trainer
