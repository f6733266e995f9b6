// The offloader's bookkeeping, on the CPU (where its copies are ordinary ones): every input comes
// back as it went, once, also when it goes in several pieces; taking layer i fetches layer i - 1
// of the same forward ahead, and nothing of an abandoned forward. And the pieces themselves:
// powers of two that add up to the input, so that the host allocator's rounding loses little.
#include "worker/trainer/parallel/activation_offload.h"

#include <gtest/gtest.h>

#include <vector>

namespace qlorad::trainer {
namespace {

TEST(ActivationOffloaderTest, InputsComeBackAsTheyWentAndThePreviousLayerIsFetchedAhead) {
  ActivationOffloader offloader;
  std::vector<at::Tensor> inputs;
  std::vector<c10::intrusive_ptr<OffloadedInput>> kept;
  for (int64_t layer = 0; layer < 3; ++layer) {
    inputs.push_back(at::randn({2, 5, 4}));
    kept.push_back(offloader.Put(layer, inputs.back()));
    // Off the device means a copy: changing the original must not change what comes back.
    ASSERT_EQ(kept.back()->host.size(), 1u);
    EXPECT_NE(kept.back()->host.front().data_ptr(), inputs.back().data_ptr());
  }
  const std::vector<at::Tensor> originals = {inputs[0].clone(), inputs[1].clone(),
                                             inputs[2].clone()};
  for (at::Tensor& x : inputs) x.zero_();
  for (const auto& input : kept) EXPECT_FALSE(input->fetched());

  EXPECT_TRUE(offloader.Take(kept[2]).equal(originals[2]));
  EXPECT_TRUE(kept[1]->fetched());  // fetched ahead, for the backward that comes next
  EXPECT_FALSE(kept[0]->fetched());
  EXPECT_TRUE(offloader.Take(kept[1]).equal(originals[1]));
  EXPECT_TRUE(kept[0]->fetched());
  EXPECT_TRUE(offloader.Take(kept[0]).equal(originals[0]));
  try {
    offloader.Take(kept[0]);
    ADD_FAILURE() << "a second Take of one input";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("already taken"), std::string::npos)
        << e.what_without_backtrace();
  }
}

TEST(ActivationOffloaderTest, AForwardWithoutBackwardIsNotFetchedByTheNextOne) {
  ActivationOffloader offloader;
  const auto abandoned = offloader.Put(0, at::ones({3}));
  offloader.Put(1, at::ones({3}));
  // A new forward: layer 0 again, then layer 1.
  const auto first = offloader.Put(0, at::full({3}, 2.0));
  const auto second = offloader.Put(1, at::full({3}, 3.0));
  EXPECT_TRUE(offloader.Take(second).equal(at::full({3}, 3.0)));
  EXPECT_TRUE(first->fetched());
  EXPECT_FALSE(abandoned->fetched());
  EXPECT_TRUE(offloader.Take(first).equal(at::full({3}, 2.0)));
}

// Layers above the offloaded ones may keep theirs on the device: nothing fetches the last
// offloaded layer ahead then but Prefetch, which fetches only an input of the latest forward that
// is still off the device.
TEST(ActivationOffloaderTest, PrefetchFetchesALayerOfTheLatestForwardOnce) {
  LayerOffloaders offloaders;
  const auto abandoned = offloaders.Kind(0).Put(0, at::ones({3}));
  const auto input = offloaders.Kind(0).Put(0, at::full({3}, 2.0));
  const auto kept = offloaders.Kind(1).Put(0, at::full({4}, 5.0));
  offloaders.Prefetch(1);  // no layer 1: nothing to do
  EXPECT_FALSE(input->fetched());
  offloaders.Prefetch(0);
  EXPECT_TRUE(input->fetched());
  EXPECT_TRUE(kept->fetched());  // every kind
  EXPECT_FALSE(abandoned->fetched());
  EXPECT_TRUE(offloaders.Kind(0).Take(input).equal(at::full({3}, 2.0)));
  offloaders.Prefetch(0);  // taken already: not fetched again
  EXPECT_FALSE(input->fetched());
  EXPECT_TRUE(offloaders.Kind(1).Take(kept).equal(at::full({4}, 5.0)));
}

TEST(ActivationOffloaderTest, PiecesArePowersOfTwoThatAddUpToTheInput) {
  constexpr int64_t kMiB = int64_t{1} << 20;
  const int64_t layer_input = int64_t{360448} * 4096 * 2;  // 8B shape, 352K tokens: 2.75 GiB
  for (const int64_t bytes :
       {layer_input, int64_t{1} << 30, 3 * kMiB + 5, kMiB, kMiB - 1, int64_t{1}, int64_t{0}}) {
    const std::vector<int64_t> pieces = HostPieceBytes(bytes, kMiB);
    int64_t sum = 0, held = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const int64_t piece = pieces[i];
      ASSERT_GT(piece, 0) << bytes;
      sum += piece;
      int64_t rounded = 1;  // what the caching host allocator holds for it
      while (rounded < piece) rounded *= 2;
      held += rounded;
      if (i + 1 < pieces.size() || piece >= kMiB) {
        EXPECT_EQ(piece & (piece - 1), 0) << piece << " of " << bytes << " is no power of two";
      }
      if (i > 0) {
        EXPECT_LT(piece, pieces[i - 1]) << bytes;
      }
    }
    EXPECT_EQ(sum, bytes);
    EXPECT_LT(held - bytes, kMiB) << bytes;  // a single block would hold 4 GiB for 2.75 GiB
  }
  EXPECT_EQ(HostPieceBytes(int64_t{3} << 30, kMiB),
            (std::vector<int64_t>{int64_t{2} << 30, int64_t{1} << 30}));
}

TEST(ActivationOffloaderTest, AnInputInSeveralPiecesComesBackWhole) {
  ActivationOffloader offloader(/*min_piece=*/16);
  // 7 x 3 x 5 bf16 = 210 bytes: pieces of 128, 64 and 16 bytes, then 2; a transposed (not
  // contiguous) input of another dtype in 8 bytes' pieces too.
  const at::Tensor a = at::randn({7, 3, 5}).to(at::kBFloat16);
  const at::Tensor b = at::randn({6, 4}, at::kDouble).t();
  const auto kept_a = offloader.Put(0, a);
  const auto kept_b = offloader.Put(1, b);
  EXPECT_EQ(kept_a->host.size(), 4u);
  const at::Tensor back_b = offloader.Take(kept_b);
  const at::Tensor back_a = offloader.Take(kept_a);
  EXPECT_EQ(back_a.scalar_type(), at::kBFloat16);
  EXPECT_EQ(back_a.sizes(), a.sizes());
  EXPECT_TRUE(back_a.equal(a));
  EXPECT_EQ(back_b.sizes(), b.sizes());
  EXPECT_TRUE(back_b.equal(b));
  EXPECT_TRUE(kept_a->host.empty());  // the host pieces go back once the input is taken
}

}  // namespace
}  // namespace qlorad::trainer
