// The collectives fsdp (worker/trainer/parallel/fsdp.h) issues for one optimizer step of two
// micro-batches on the tiny model (two units), in order. A world of one computes the same with
// any schedule, so only the sequence shows a unit gathered once too often (the last one freed
// after forward, a prefetch in the wrong direction or past either end of the model) or not at
// all. The sequences are the schedule that fsdp.h describes, written out by hand.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "worker/trainer/model/llama_model.h"
#include "worker/trainer/model/qlora.h"
#include "worker/trainer/model/tiny_model.h"
#include "worker/trainer/parallel/activation_recompute.h"
#include "worker/trainer/parallel/communicator.h"
#include "worker/trainer/parallel/parallelize.h"

namespace qlorad::trainer::parallel {
namespace {

// A world of one that writes down what each collective carried, in the units of one decoder
// layer: "frozen" (its frozen bytes), "lora" (its LoRA in the gather dtype), "frozen+lora".
class ScheduleRecorder : public Communicator {
 public:
  ScheduleRecorder(int64_t frozen_bytes, int64_t lora_bytes)
      : frozen_(frozen_bytes), lora_(lora_bytes) {}

  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "local"; }
  std::unique_ptr<Work> AllGather(at::Tensor& output, at::Tensor& input) override {
    const int64_t bytes = static_cast<int64_t>(output.nbytes());
    const int64_t aligned_frozen = (frozen_ + 7) / 8 * 8;
    log.push_back(bytes == frozen_                  ? "gather frozen"
                  : bytes == lora_                  ? "gather lora"
                  : bytes == aligned_frozen + lora_ ? "gather frozen+lora"
                                                    : "gather " + std::to_string(bytes) + " bytes");
    return local_->AllGather(output, input);
  }
  std::unique_ptr<Work> ReduceScatterSum(at::Tensor& output, at::Tensor& input) override {
    log.push_back("reduce-scatter");
    return local_->ReduceScatterSum(output, input);
  }
  std::unique_ptr<Work> AllReduceSum(at::Tensor& tensor) override {
    return local_->AllReduceSum(tensor);
  }
  std::unique_ptr<Work> Broadcast(at::Tensor& tensor, int root) override {
    return local_->Broadcast(tensor, root);
  }
  std::unique_ptr<Work> Barrier() override { return local_->Barrier(); }

  std::vector<std::string> log;

 private:
  int64_t frozen_;
  int64_t lora_;
  std::unique_ptr<Communicator> local_ = MakeLocalCommunicator(at::kCPU);
};

// (reshard_after_forward, activation recompute) -> the step's collectives.
class FsdpScheduleTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

// Random weights on the tiny model; LoRA on some projections only (k, o and gate have none).
LlamaModel TinyModelWithSomeLora() {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const WeightSource random = [&gen](const std::string&, const std::vector<int64_t>& shape) {
    return StatusOr<at::Tensor>(at::randn(shape, gen, at::kFloat) * 0.2);
  };
  auto model = BuildLlamaModel(TinyLlamaConfig(), random, at::kCPU, at::kFloat);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  LoraSpec lora;
  lora.r = 4;
  lora.target_modules = {"q_proj", "v_proj", "up_proj", "down_proj"};
  EXPECT_TRUE(ApplyQLora(*model, QuantizationSpec{QuantizationType::kNone}, lora, 3).ok());
  return *model;
}

TEST_P(FsdpScheduleTest, OneStepIssuesTheDescribedCollectivesInOrder) {
  const auto [reshard, recompute] = GetParam();
  LlamaModel model = TinyModelWithSomeLora();
  // One layer's bytes; the tiny model's layers are alike.
  int64_t frozen_bytes = 0, lora_bytes = 0;
  const auto layers = model->NamedLinearsByLayer();
  for (const auto& [name, linear] : layers.front()) {
    frozen_bytes += static_cast<int64_t>(linear->dense_weight().nbytes());
    if (linear->has_lora()) {
      lora_bytes += static_cast<int64_t>(linear->lora_a().nbytes() + linear->lora_b().nbytes());
    }
  }
  auto recorder = std::make_shared<ScheduleRecorder>(frozen_bytes, lora_bytes);
  ParallelSpec spec;
  spec.reshard_after_forward = reshard;
  auto fsdp = ApplyDataParallel(model, Strategy::kFsdp, spec, recorder);
  ASSERT_TRUE(fsdp.ok()) << fsdp.status().ToString();
  if (recompute) ApplyActivationRecompute(model);

  const int64_t vocab = TinyLlamaConfig().vocab_size;
  const at::Tensor ids = at::randint(vocab, {2, 8}, at::kLong);
  for (int micro_batch = 0; micro_batch < 2; ++micro_batch) {
    recorder->log.push_back("forward");
    const at::Tensor hidden = model->forward(ids, at::Tensor());
    at::Tensor loss =
        at::cross_entropy_loss(model->Logits(hidden).view({-1, vocab}), ids.view({-1}));
    recorder->log.push_back("backward");
    loss.backward();
  }
  recorder->log.push_back("finish");
  ASSERT_TRUE((*fsdp)->FinishBackward().ok());

  // Forward gathers the first unit and prefetches the second, each with its LoRA. The second
  // micro-batch finds the first unit still gathered from backward, without LoRA (autograd took
  // it), so only its LoRA travels.
  const std::vector<std::string> first_forward = {"gather frozen+lora", "gather frozen+lora"};
  const std::vector<std::string> later_forward = {"gather frozen+lora", "gather lora"};
  // Backward runs the units last to first, alike in both micro-batches; the last unit is still
  // gathered when it starts.
  std::vector<std::string> backward;
  if (!recompute && reshard) {
    // The first unit was freed after forward: its frozen bytes come back (prefetched).
    backward = {"gather frozen", "reduce-scatter", "reduce-scatter"};
  } else if (!recompute) {
    backward = {"reduce-scatter", "reduce-scatter"};  // nothing was freed
  } else if (reshard) {
    // Recomputing the last unit prefetches the first with its LoRA (it is recomputed next), and
    // gathers its own LoRA alone: the checkpointed forward's gather recorded no graph.
    backward = {"gather frozen+lora", "gather lora", "reduce-scatter", "reduce-scatter"};
  } else {
    // Both units stayed gathered: each recompute gathers only its LoRA.
    backward = {"gather lora", "reduce-scatter", "gather lora", "reduce-scatter"};
  }
  std::vector<std::string> expected;
  for (const auto& forward : {first_forward, later_forward}) {
    expected.push_back("forward");
    expected.insert(expected.end(), forward.begin(), forward.end());
    expected.push_back("backward");
    expected.insert(expected.end(), backward.begin(), backward.end());
  }
  expected.push_back("finish");
  EXPECT_EQ(recorder->log, expected);
}

std::string ScheduleName(const ::testing::TestParamInfo<std::tuple<bool, bool>>& param) {
  return std::string(std::get<0>(param.param) ? "Reshard" : "Keep") +
         (std::get<1>(param.param) ? "Recompute" : "");
}

INSTANTIATE_TEST_SUITE_P(ReshardAndRecompute, FsdpScheduleTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()), ScheduleName);

}  // namespace
}  // namespace qlorad::trainer::parallel
