#include "worker/trainer/model/fused_projection.h"

#include <gtest/gtest.h>

#include <cmath>
#include <utility>
#include <vector>

#include "tests/unit/trainer/model/lora_layer_maker.h"

namespace qlorad::trainer {
namespace {

at::Generator Gen(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// Output widths over an input of 32: q/k/v-like layers of unequal widths (narrower together than
// twice the input: the adapters run beside the base GEMM), and gate/up-like ones (wider: folded
// into it).
const std::vector<int64_t> kQkv = {24, 8, 8};
const std::vector<int64_t> kGateUp = {40, 40};
// And a down-like one, narrower than its input (backward stacks the adapters' A under W).
const std::vector<int64_t> kDown = {16};

// Layers over one input, with adapters whose B is not zero (so the low-rank update shows in every
// output and gradient).
std::vector<QLoraLinear> MakeLayers(at::ScalarType dtype, double scale, double dropout = 0.0,
                                    bool nf4 = false, const std::vector<int64_t>& outs = kQkv) {
  std::vector<QLoraLinear> layers;
  uint64_t seed = 100;
  for (int64_t out : outs) {
    layers.push_back(testing::RandomLoraLayer(out, 32, seed, dtype, scale, dropout, nf4));
    seed += 3;
  }
  return layers;
}

struct Result {
  at::Tensor y, dx;
  std::vector<at::Tensor> grads;  // A then B of each layer
};

// Forward with the upstream gradient `dy`, then the gradients of x and every adapter.
Result RunLayers(const std::vector<QLoraLinear>& layers, const at::Tensor& x_in,
                 const at::Tensor& dy, bool fused, LoraFolding folding = LoraFolding::kBoth) {
  for (const auto& layer : layers) {
    layer->lora_a().mutable_grad() = at::Tensor();
    layer->lora_b().mutable_grad() = at::Tensor();
  }
  at::Tensor x = x_in.detach().clone().requires_grad_(true);
  at::Tensor y;
  FusedProjection projection(layers);  // outlives the graph, which borrows it
  projection.set_folding(folding);
  if (fused) {
    EXPECT_TRUE(projection.Applies(x));
    y = projection.forward(x);
  } else {
    std::vector<at::Tensor> outs;
    for (QLoraLinear layer : layers) outs.push_back(layer->forward(x));  // handles: non-const
    y = at::cat(outs, -1);
  }
  y.backward(dy);
  Result r{y.detach(), x.grad(), {}};
  for (const auto& layer : layers) r.grads.push_back(layer->lora_a().grad());
  for (const auto& layer : layers) r.grads.push_back(layer->lora_b().grad());
  return r;
}

double MaxRelativeError(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kDouble);
  return ((got.to(at::kDouble) - w).abs().max() / w.abs().max()).item<double>();
}

void ExpectSameAsLayerByLayer(at::ScalarType dtype, bool nf4, double tolerance,
                              const std::vector<int64_t>& outs = kQkv,
                              LoraFolding folding = LoraFolding::kBoth) {
  const auto layers = MakeLayers(dtype, /*scale=*/0.5, 0.0, nf4, outs);
  FusedProjection probe(layers);
  probe.set_folding(folding);
  EXPECT_EQ(probe.FoldsAdapters(), outs == kGateUp && folding != LoraFolding::kOff);
  int64_t width = 0;
  for (int64_t out : outs) width += out;
  const at::Tensor x = at::randn({3, 5, 32}, Gen(7)).to(dtype);
  const at::Tensor dy = at::randn({3, 5, width}, Gen(8)).to(dtype);
  const Result want = RunLayers(layers, x, dy, /*fused=*/false);
  const Result got = RunLayers(layers, x, dy, /*fused=*/true, folding);
  EXPECT_EQ(got.y.sizes(), want.y.sizes());
  EXPECT_EQ(got.y.scalar_type(), dtype);
  EXPECT_LT(MaxRelativeError(got.y, want.y), tolerance);
  EXPECT_LT(MaxRelativeError(got.dx, want.dx), tolerance);
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (size_t i = 0; i < got.grads.size(); ++i) {
    ASSERT_TRUE(got.grads[i].defined()) << i;
    EXPECT_EQ(got.grads[i].scalar_type(), at::kFloat) << i;  // the parameters' dtype
    EXPECT_LT(MaxRelativeError(got.grads[i], want.grads[i]), tolerance) << "adapter gradient " << i;
  }
}

// fp32: the same sums in another order (one GEMM over stacked weights, the scale inside the
// addmm), so agreement to fp32 rounding of a 32-term dot product.
TEST(FusedProjectionTest, MatchesLayerByLayerInFp32) {
  ExpectSameAsLayerByLayer(at::kFloat, /*nf4=*/false, 1e-5);
}

// bf16: the layer-by-layer path rounds x A, (x A) B, the scaled update and the sum separately,
// the fused one rounds once; each rounding is 2^-8 relative, so a few of them.
TEST(FusedProjectionTest, MatchesLayerByLayerInBf16) {
  ExpectSameAsLayerByLayer(at::kBFloat16, /*nf4=*/false, 3e-2);
}

// The grouped NF4 dequantization gives each layer its own weight back, in place in the stack.
TEST(FusedProjectionTest, MatchesLayerByLayerWithNf4Weights) {
  if (!Nf4OpsAvailable(at::kCPU)) GTEST_SKIP() << "built without qlorad_ops";
  ExpectSameAsLayerByLayer(at::kFloat, /*nf4=*/true, 1e-5);
  const auto layers = MakeLayers(at::kFloat, 1.0, 0.0, /*nf4=*/true);
  const at::Tensor stacked = FusedProjection(layers).StackedWeight(at::kFloat);
  int64_t row = 0;
  for (const auto& layer : layers) {
    EXPECT_TRUE(
        at::equal(stacked.narrow(0, row, layer->out_features()), layer->BaseWeight(at::kFloat)));
    row += layer->out_features();
  }
}

// Folded into the base GEMM (the gate/up-like widths): the same sums as layer by layer, to the
// same tolerances as the unfolded path above (fp32: another order of one dot product; bf16: the
// folded path rounds s B once where the other rounds the scaled update, a rounding of the same
// size).
// Folded both ways or in forward only (backward on the plain W, the first columns of a W+ when
// one is handed in), and not at all.
TEST(FusedProjectionTest, FoldedAdaptersMatchLayerByLayer) {
  for (LoraFolding folding : {LoraFolding::kBoth, LoraFolding::kForward, LoraFolding::kOff}) {
    ExpectSameAsLayerByLayer(at::kFloat, /*nf4=*/false, 1e-5, kGateUp, folding);
    ExpectSameAsLayerByLayer(at::kBFloat16, /*nf4=*/false, 3e-2, kGateUp, folding);
    if (Nf4OpsAvailable(at::kCPU)) {
      ExpectSameAsLayerByLayer(at::kFloat, /*nf4=*/true, 1e-5, kGateUp, folding);
    }
  }
  // A backward handed W+ (as ChunkedMlp hands the weight it dequantized once for its chunks)
  // gives what one dequantizing the plain W gives, in either folding.
  const auto layers = MakeLayers(at::kFloat, 0.5, 0.0, false, kGateUp);
  const at::Tensor x = at::randn({6, 32}, Gen(15)), dy = at::randn({6, 80}, Gen(16));
  std::vector<at::Tensor> dx;
  for (LoraFolding folding : {LoraFolding::kBoth, LoraFolding::kForward}) {
    FusedProjection projection(layers);
    projection.set_folding(folding);
    const std::vector<at::Tensor> adapters = projection.Adapters();
    for (bool handed : {false, true}) {
      const at::Tensor w = handed ? projection.GemmWeight(at::kFloat, adapters) : at::Tensor();
      at::Tensor xa, x_kept;
      projection.Forward2d(x, adapters, &xa, w, &x_kept);
      std::vector<at::Tensor> grads;
      dx.push_back(projection.Backward2d(x_kept, xa, adapters, dy, true, &grads, w));
      EXPECT_EQ(dx.back().is_contiguous(), folding == LoraFolding::kForward);
    }
  }
  for (const at::Tensor& d : dx) EXPECT_TRUE(at::allclose(d, dx[1], 1e-5, 1e-5));
}

// Narrower than its input (down): backward's dX = [dY | s dY B] [W ; A] in one GEMM, the same sums
// as layer by layer to the tolerances above; stacked or not, handed [W ; A] or dequantizing it,
// the same dX and adapter gradients.
TEST(FusedProjectionTest, StackedBackwardMatchesLayerByLayer) {
  ExpectSameAsLayerByLayer(at::kFloat, /*nf4=*/false, 1e-5, kDown);
  ExpectSameAsLayerByLayer(at::kBFloat16, /*nf4=*/false, 3e-2, kDown);
  if (Nf4OpsAvailable(at::kCPU)) ExpectSameAsLayerByLayer(at::kFloat, /*nf4=*/true, 1e-5, kDown);

  const auto layers = MakeLayers(at::kFloat, 0.5, 0.0, false, kDown);
  at::NoGradGuard no_grad;  // as inside an autograd function
  const at::Tensor x = at::randn({6, 32}, Gen(17)), dy = at::randn({6, 16}, Gen(18));
  std::vector<at::Tensor> dx;
  std::vector<std::vector<at::Tensor>> grads;
  for (bool stack : {false, true}) {
    FusedProjection projection(layers);
    projection.set_backward_stacking(stack);
    EXPECT_EQ(projection.StacksAdaptersInBackward(), stack);
    const std::vector<at::Tensor> adapters = projection.Adapters();
    const at::Tensor w = projection.BackwardWeight(at::kFloat, adapters);
    // [W ; A]: W's rows, then A's.
    EXPECT_EQ(w.size(0), stack ? 16 + layers[0]->lora_options().r : 16);
    EXPECT_TRUE(at::equal(w.narrow(0, 0, 16), projection.StackedWeight(at::kFloat)));
    if (stack) {
      EXPECT_TRUE(at::equal(w.narrow(0, 16, w.size(0) - 16), layers[0]->lora_a()));
    }
    for (bool handed : {false, true}) {
      at::Tensor xa;
      projection.Forward2d(x, adapters, &xa);
      grads.emplace_back();
      dx.push_back(projection.Backward2d(x, xa, adapters, dy, true, &grads.back(),
                                         handed ? w : at::Tensor()));
    }
  }
  for (size_t i = 1; i < dx.size(); ++i) {
    EXPECT_TRUE(at::allclose(dx[i], dx[0], 1e-5, 1e-5)) << i;
    for (size_t j = 0; j < grads[0].size(); ++j) {
      EXPECT_TRUE(at::allclose(grads[i][j], grads[0][j], 1e-5, 1e-5)) << i << " gradient " << j;
    }
  }

  // A stacking backward handed the plain W says what it needed.
  FusedProjection projection(layers);
  projection.set_backward_stacking(true);
  const std::vector<at::Tensor> adapters = projection.Adapters();
  at::Tensor xa;
  projection.Forward2d(x, adapters, &xa);
  std::vector<at::Tensor> unused;
  try {
    projection.Backward2d(x, xa, adapters, dy, true, &unused, projection.StackedWeight(at::kFloat));
    ADD_FAILURE() << "a plain W was taken for [W ; A]";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("needs [W ; A] [20, 32]"),
              std::string::npos)
        << e.what_without_backtrace();
  }
}

// W+ = [W | s B]: the stacked frozen weights first, then each s_i B_i in its own rows and
// columns, zeros in the other adapter's.
TEST(FusedProjectionTest, TheFoldedWeightHoldsWThenEachScaledBOnItsOwnRows) {
  for (const auto& [nf4, scale] : {std::pair{false, 0.5}, {true, 0.5}, {false, 1.0}}) {
    if (nf4 && !Nf4OpsAvailable(at::kCPU)) continue;
    const auto layers = MakeLayers(at::kFloat, scale, 0.0, nf4, kGateUp);
    const FusedProjection projection(layers);
    const std::vector<at::Tensor> adapters = projection.Adapters();
    const at::Tensor w = projection.GemmWeight(at::kFloat, adapters);
    ASSERT_EQ(w.sizes(), (std::vector<int64_t>{80, 32 + 2 * layers[0]->lora_options().r}));
    EXPECT_TRUE(at::equal(w.narrow(1, 0, 32), projection.StackedWeight(at::kFloat)));
    const int64_t r = layers[0]->lora_options().r;
    for (int64_t i = 0; i < 2; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const at::Tensor block = w.narrow(0, 40 * i, 40).narrow(1, 32 + r * j, r);
        if (i == j) {
          EXPECT_TRUE(at::equal(block, layers[i]->lora_b() * scale)) << nf4 << " block " << i;
        } else {
          EXPECT_TRUE(block.eq(0).all().item<bool>()) << nf4 << " block " << i << "," << j;
        }
      }
    }
  }
}

// Forward2d hands backward x's copy beside xa, so the caller's x can go: two views of one buffer,
// holding x and x A^T.
TEST(FusedProjectionTest, FoldedForwardKeepsXBesideXa) {
  const auto layers = MakeLayers(at::kFloat, 0.5, 0.0, false, kGateUp);
  const FusedProjection projection(layers);
  const at::Tensor x = at::randn({6, 32}, Gen(12));
  at::Tensor xa, x_kept;
  projection.Forward2d(x, projection.Adapters(), &xa, {}, &x_kept);
  EXPECT_TRUE(at::equal(x_kept, x));
  EXPECT_FALSE(x_kept.is_same(x));
  EXPECT_TRUE(at::allclose(xa, projection.LoraInput2d(x, projection.Adapters())));
  EXPECT_EQ(xa.data_ptr<float>(), x_kept.data_ptr<float>() + 32);  // [x | xa], row by row
  EXPECT_EQ(xa.stride(0), 32 + xa.size(1));

  // Unfolded, backward reads x itself.
  const FusedProjection qkv(MakeLayers(at::kFloat, 0.5));
  qkv.Forward2d(x, qkv.Adapters(), &xa, {}, &x_kept);
  EXPECT_TRUE(x_kept.is_same(x));
}

// Fed by a norm that leaves room (the decoder layer's q|k|v): x A goes into the spare columns
// after each row of x, so even q|k|v, narrower than twice its input, folds; the sums equal the
// layers', and x (saved by an autograd function before the projection ran, as ChunkedMlp saves
// it) is not written (no version bump: its backward still runs). Without room it does not fold.
TEST(FusedProjectionTest, FedByANormWithRoomFoldsInPlace) {
  const auto layers = MakeLayers(at::kFloat, 0.5);
  FusedProjection projection(layers);
  projection.SetFedWithRoom(true);
  ASSERT_EQ(projection.InputRoom(), 16);  // 3 adapters of rank 4, rounded up to 8
  const at::Tensor source = at::randn({15, 32}, Gen(13));
  at::Tensor buffer = at::full({15, 48}, std::nan(""));
  const at::Tensor x = buffer.narrow(1, 0, 32).copy_(source);
  EXPECT_TRUE(projection.FoldsAdaptersFor(x));
  EXPECT_FALSE(projection.FoldsAdaptersFor(source));
  // Rows far enough apart, but the storage ends before the last row's room.
  EXPECT_FALSE(projection.FoldsAdaptersFor(at::empty({15 * 48 - 1}).as_strided({15, 32}, {48, 1})));
  EXPECT_FALSE(FusedProjection(layers).FoldsAdaptersFor(x));  // not fed with room

  const int64_t version = x._version();
  at::Tensor xa, x_kept;
  const at::Tensor y = projection.Forward2d(x, projection.Adapters(), &xa, {}, &x_kept);
  EXPECT_EQ(x._version(), version);
  EXPECT_TRUE(x_kept.is_same(x));
  EXPECT_EQ(xa.data_ptr<float>(), x.data_ptr<float>() + 32);
  EXPECT_TRUE(at::allclose(xa, projection.LoraInput2d(source, projection.Adapters()), 1e-5, 1e-5));
  std::vector<at::Tensor> outs;
  for (QLoraLinear layer : layers) outs.push_back(layer->forward(source).detach());
  EXPECT_LT(MaxRelativeError(y, at::cat(outs, -1)), 1e-5);

  // Backward through the autograd function: the folded dX (the first columns of a wider buffer)
  // and the adapters' gradients, as layer by layer.
  const at::Tensor dy = at::randn({15, 40}, Gen(14));
  const Result want = RunLayers(layers, source, dy, /*fused=*/false);
  for (const auto& layer : layers) {
    layer->lora_a().mutable_grad() = at::Tensor();
    layer->lora_b().mutable_grad() = at::Tensor();
  }
  const at::Tensor leaf = source.clone().requires_grad_(true);
  at::Tensor roomy = at::empty({15, 48});
  // An identity with room: x's values in the first columns, autograd's gradient flowing back.
  const at::Tensor x_grad_path = roomy.narrow(1, 0, 32).copy_(leaf);
  const at::Tensor got_y = projection.forward(x_grad_path);
  got_y.backward(dy);
  EXPECT_LT(MaxRelativeError(got_y.detach(), want.y), 1e-5);
  EXPECT_LT(MaxRelativeError(leaf.grad(), want.dx), 1e-5);
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_LT(MaxRelativeError(layers[i]->lora_a().grad(), want.grads[i]), 1e-5) << i;
    EXPECT_LT(MaxRelativeError(layers[i]->lora_b().grad(), want.grads[layers.size() + i]), 1e-5)
        << i;
  }
}

TEST(FusedProjectionTest, AGradientOfTheInputIsSkippedWhenNotWanted) {
  for (const auto& outs : {kQkv, kGateUp}) {
    const auto layers = MakeLayers(at::kFloat, 1.0, 0.0, false, outs);
    FusedProjection projection(layers);
    const at::Tensor x = at::randn({4, 32}, Gen(9));  // no requires_grad: a first layer's input
    projection.forward(x).sum().backward();
    for (const auto& layer : layers) {
      EXPECT_TRUE(layer->lora_a().grad().defined());
      EXPECT_GT(layer->lora_b().grad().abs().sum().item<double>(), 0);
    }
  }
}

// The adapters are cast to the activations' dtype once and reused until a parameter changes in
// place (as AdamW's update does); the next forward then casts again and computes with the new
// values.
TEST(FusedProjectionTest, CastsTheAdaptersOnceUntilOneChanges) {
  const auto layers = MakeLayers(at::kBFloat16, 0.5);
  FusedProjection projection(layers);
  const at::Tensor x = at::randn({4, 32}, Gen(10)).to(at::kBFloat16).requires_grad_(true);
  for (int i = 0; i < 2; ++i) projection.forward(x).sum().backward();
  EXPECT_EQ(projection.adapter_casts(), 1);

  const at::Tensor before = projection.forward(x).detach();
  {
    const at::NoGradGuard no_grad;
    layers[1]->lora_b().add_(0.25);
  }
  const at::Tensor after = projection.forward(x).detach();
  EXPECT_EQ(projection.adapter_casts(), 2);
  EXPECT_GT((after - before).narrow(1, 24, 8).abs().max().item<double>(), 0.05);
  std::vector<at::Tensor> outs;
  for (QLoraLinear layer : layers) outs.push_back(layer->forward(x).detach());
  EXPECT_LT(MaxRelativeError(after, at::cat(outs, -1)), 3e-2);

  // Writes no version counter sees (a collective's) are covered by the step boundary: every
  // step casts afresh.
  AdapterCastCache::NewStep();
  projection.forward(x);
  EXPECT_EQ(projection.adapter_casts(), 3);
}

// Adapters that are not leaves (fsdp's gathered ones) may be refilled without any version change,
// so they are cast at every use.
// Cast together (a model's forward does it before its layers run): each projection's entry is
// filled once, holds what its own cast would, and its forward casts nothing more; projections
// whose adapters already compute in fp32, or that it does not apply to, are left alone.
TEST(FusedProjectionTest, CastsTogetherWhatEachWouldCastAlone) {
  const auto qkv_layers = MakeLayers(at::kBFloat16, 0.5);
  const auto gate_up_layers = MakeLayers(at::kBFloat16, 0.5, 0.0, false, kGateUp);
  const FusedProjection qkv(qkv_layers), gate_up(gate_up_layers), alone(qkv_layers);
  const FusedProjection fp32(MakeLayers(at::kFloat, 0.5));
  FusedProjection::CastTogether({&qkv, &gate_up, &fp32}, at::kBFloat16);
  EXPECT_EQ(qkv.adapter_casts(), 1);
  EXPECT_EQ(gate_up.adapter_casts(), 1);
  EXPECT_EQ(fp32.adapter_casts(), 0);  // computes in fp32: not its dtype
  FusedProjection::CastTogether({&fp32}, at::kFloat);
  EXPECT_EQ(fp32.adapter_casts(), 0);  // fp32 adapters in fp32: nothing to cast

  const at::Tensor x = at::randn({4, 32}, Gen(19)).to(at::kBFloat16).requires_grad_(true);
  const at::Tensor y = qkv.forward(x);
  EXPECT_TRUE(at::equal(y, alone.forward(x)));  // the same casts, the same bits
  y.sum().backward();
  gate_up.forward(x).sum().backward();
  EXPECT_EQ(qkv.adapter_casts(), 1);
  EXPECT_EQ(gate_up.adapter_casts(), 1);
  // Fresh entries are not cast again; a new step casts them all again.
  FusedProjection::CastTogether({&qkv, &gate_up}, at::kBFloat16);
  EXPECT_EQ(qkv.adapter_casts(), 1);
  AdapterCastCache::NewStep();
  FusedProjection::CastTogether({&qkv, &gate_up}, at::kBFloat16);
  EXPECT_EQ(qkv.adapter_casts(), 2);
  EXPECT_EQ(gate_up.adapter_casts(), 2);
}

TEST(FusedProjectionTest, DoesNotCacheAdaptersThatAreNotLeaves) {
  const auto layers = MakeLayers(at::kBFloat16, 0.5);
  FusedProjection projection(layers);
  std::vector<at::Tensor> adapters;
  for (const at::Tensor& t : projection.Adapters()) adapters.push_back(t * 1.0);
  const at::Tensor x = at::randn({4, 32}, Gen(11)).to(at::kBFloat16);
  at::Tensor xa;
  projection.Forward2d(x, adapters, &xa);
  EXPECT_EQ(projection.adapter_casts(), 0);
  EXPECT_TRUE(at::allclose(xa, projection.LoraInput2d(x, projection.Adapters())));
}

TEST(FusedProjectionTest, FrozenLayersWithoutAdaptersGiveTheStackedLinear) {
  std::vector<QLoraLinear> layers = {QLoraLinear(at::randn({6, 5}, Gen(1))),
                                     QLoraLinear(at::randn({3, 5}, Gen(2)))};
  FusedProjection projection(layers);
  const at::Tensor x = at::randn({2, 5}, Gen(3));
  ASSERT_TRUE(projection.Applies(x));
  EXPECT_TRUE(at::allclose(
      projection.forward(x),
      at::cat({at::linear(x, layers[0]->dense_weight()), at::linear(x, layers[1]->dense_weight())},
              -1)));
}

// Where the fused path would compute something else, it says so and the layers run themselves.
TEST(FusedProjectionTest, DoesNotApplyToDropoutInTrainingMixedAdaptersOrAnotherComputeDtype) {
  const at::Tensor x = at::randn({2, 32}, Gen(4));
  auto dropout = MakeLayers(at::kFloat, 1.0, /*dropout=*/0.1);
  EXPECT_FALSE(FusedProjection(dropout).Applies(x));
  for (auto& layer : dropout) layer->eval();
  EXPECT_TRUE(FusedProjection(dropout).Applies(x));  // no dropout in eval mode

  auto mixed = MakeLayers(at::kFloat, 1.0);
  mixed.push_back(QLoraLinear(at::randn({4, 32}, Gen(5))));
  EXPECT_FALSE(FusedProjection(mixed).Applies(x));

  EXPECT_FALSE(FusedProjection(MakeLayers(at::kFloat, 1.0)).Applies(x.to(at::kBFloat16)));
}

TEST(FusedProjectionTest, RefusesLayersOfDifferentInputWidths) {
  try {
    FusedProjection({QLoraLinear(at::randn({4, 8})), QLoraLinear(at::randn({4, 6}))});
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("inputs of 8 and 6 features"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace qlorad::trainer
