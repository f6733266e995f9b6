// The offloader's bookkeeping, on the CPU (where its copies are ordinary ones): every input comes
// back as it went, once; taking layer i fetches layer i - 1 of the same forward ahead, and nothing
// of an abandoned forward.
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
    EXPECT_NE(kept.back()->host.data_ptr(), inputs.back().data_ptr());
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

}  // namespace
}  // namespace qlorad::trainer
