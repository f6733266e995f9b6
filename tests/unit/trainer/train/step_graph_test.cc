// The host side of the step graph (step_graph.h): which jobs may record, and what a step does
// where it cannot (a CPU, a recording refused). Recording and replaying themselves need a GPU:
// tests/gpu/test_train_cuda.py.
#include "worker/trainer/train/step_graph.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "worker/trainer/model/adapter_cast_cache.h"

namespace qlorad::trainer {
namespace {

TEST(StepGraphUnsuitable, NamesWhatKeepsAJobsStepsEager) {
  const StepGraphJob suitable;
  EXPECT_EQ(StepGraphUnsuitable(suitable), "");
  StepGraphJob on = suitable;
  on.switch_value = "1";
  EXPECT_EQ(StepGraphUnsuitable(on), "");

  const auto why = [&](auto change) {
    StepGraphJob job = suitable;
    change(job);
    return StepGraphUnsuitable(job);
  };
  EXPECT_EQ(why([](StepGraphJob& j) { j.switch_value = "0"; }), "QLORAD_CUDA_GRAPH=0");
  EXPECT_EQ(why([](StepGraphJob& j) { j.world_size = 2; }), "several ranks");
  EXPECT_EQ(why([](StepGraphJob& j) { j.dropout = true; }),
            "lora.dropout draws new masks every step");
  EXPECT_EQ(why([](StepGraphJob& j) { j.offload = true; }),
            "activation offload moves tensors through host memory");
  EXPECT_EQ(why([](StepGraphJob& j) { j.classifier = true; }), "task: classification");
  EXPECT_EQ(why([](StepGraphJob& j) { j.phase_timing = true; }),
            "QLORAD_PHASE_TIMING waits for the device inside the step");
  EXPECT_EQ(why([](StepGraphJob& j) { j.injected_oom = true; }),
            "QLORAD_INJECT_OOM_ROWS raises inside the step");
}

// A toy step: loss = scale * sum((w * inputs)^2), backward into w.
struct ToyStep {
  at::Tensor w = torch::full({3}, 2.0, torch::kFloat).requires_grad_(true);
  int calls = 0;

  StepGraph::Forward Forward() {
    return [this](const at::Tensor& inputs, const at::Tensor& labels, const at::Tensor& scale) {
      ++calls;
      EXPECT_EQ(scale.dim(), 0);
      EXPECT_EQ(scale.scalar_type(), at::kDouble);
      const at::Tensor sum = (w * inputs.to(at::kFloat) + labels.to(at::kFloat)).pow(2).sum();
      const at::Tensor loss = sum * scale.to(sum.scalar_type());
      loss.backward();
      return loss.detach().to(at::kDouble);
    };
  }
};

TEST(StepGraph, WithoutARecorderEveryStepRunsEagerly) {
  ToyStep toy;
  StepGraph graph(nullptr, {toy.w});
  const at::Tensor inputs = torch::tensor({1, 2, 3}, torch::kLong);
  const at::Tensor labels = torch::zeros({3}, torch::kLong);
  for (int step = 0; step < 4; ++step) {
    toy.w.mutable_grad() = at::Tensor();
    const at::Tensor loss = graph.Run(toy.Forward(), inputs, labels, 0.5);
    // w * x = (2, 4, 6): sum of squares 56, times the scale.
    EXPECT_DOUBLE_EQ(loss.item<double>(), 28.0);
    // d/dw = scale * 2 w x^2 = (2, 8, 18).
    EXPECT_TRUE(toy.w.grad().equal(torch::tensor({2.0f, 8.0f, 18.0f})));
  }
  EXPECT_EQ(toy.calls, 4);
  EXPECT_FALSE(graph.recorded());
  EXPECT_EQ(graph.replays(), 0);
}

// What a capture that refuses does: the host side of the work ran (here the device side too; a
// real capture records kernels without running them) and the recorder says it failed.
class RefusingRecorder final : public GraphRecorder {
 public:
  bool Record(const std::function<void()>& record, std::string* error) override {
    ++recordings;
    record();
    *error = "operation not permitted when stream is capturing";
    return false;
  }
  void Replay() override { ADD_FAILURE() << "a refused recording was replayed"; }
  int recordings = 0;
};

TEST(StepGraph, ARefusedRecordingRunsTheStepEagerlyFromScratchAndEveryStepAfterIt) {
  ToyStep toy;
  StepGraph graph(std::make_unique<RefusingRecorder>(), {toy.w}, /*eager_steps=*/1);
  const at::Tensor inputs = torch::tensor({1, 2, 3}, torch::kLong);
  const at::Tensor labels = torch::zeros({3}, torch::kLong);
  for (int step = 0; step < 3; ++step) {
    toy.w.mutable_grad() = at::Tensor();  // the optimizer's zero_grad
    const at::Tensor loss = graph.Run(toy.Forward(), inputs, labels, 1.0);
    EXPECT_DOUBLE_EQ(loss.item<double>(), 56.0);
    // Not twice the gradient: the refused recording's share was dropped before the eager run.
    EXPECT_TRUE(toy.w.grad().equal(torch::tensor({4.0f, 16.0f, 36.0f}))) << "step " << step;
  }
  // One eager step, the refused recording and its eager rerun, one more eager step.
  EXPECT_EQ(toy.calls, 4);
  EXPECT_FALSE(graph.recorded());
  EXPECT_EQ(graph.failure(), "operation not permitted when stream is capturing");
}

TEST(StepGraph, DoesNotRecordOverAGradientAlreadySet) {
  ToyStep toy;
  StepGraph graph(std::make_unique<RefusingRecorder>(), {toy.w}, /*eager_steps=*/0);
  toy.w.mutable_grad() = torch::ones({3});  // a step that accumulates onto it
  const at::Tensor loss = graph.Run(toy.Forward(), torch::tensor({1, 2, 3}, torch::kLong),
                                    torch::zeros({3}, torch::kLong), 1.0);
  EXPECT_DOUBLE_EQ(loss.item<double>(), 56.0);
  EXPECT_TRUE(toy.w.grad().equal(torch::tensor({5.0f, 17.0f, 37.0f})));
  EXPECT_EQ(toy.calls, 1);
  EXPECT_EQ(graph.failure(), "a gradient was already set when the step was recorded");
}

// What a capture that succeeds leaves the host with, where no GPU can record: the recording ran
// the work once (a real one runs nothing), and a replay, which on a GPU reruns the kernels on the
// same memory, here does nothing at all. Enough for the host's side: what it hands back after a
// replay and when it lets the graph go.
class AcceptingRecorder final : public GraphRecorder {
 public:
  AcceptingRecorder(int* replays, bool* destroyed) : replays_(replays), destroyed_(destroyed) {}
  ~AcceptingRecorder() override { *destroyed_ = true; }
  bool Record(const std::function<void()>& record, std::string* /*error*/) override {
    record();
    return true;
  }
  void Replay() override { ++*replays_; }

 private:
  int* replays_;
  bool* destroyed_;
};

TEST(StepGraph, ReplaysHandBackTheRecordedGradientsAndAnotherShapeLetsTheGraphGo) {
  ToyStep toy;
  int replays = 0;
  bool destroyed = false;
  StepGraph graph(std::make_unique<AcceptingRecorder>(&replays, &destroyed), {toy.w},
                  /*eager_steps=*/1);
  const at::Tensor labels = torch::zeros({3}, torch::kLong);
  const at::Tensor a = torch::tensor({1, 2, 3}, torch::kLong).view({1, 3});
  const at::Tensor b = torch::tensor({1, 2, 3, 1, 2, 3}, torch::kLong).view({2, 3});
  const auto step = [&](const at::Tensor& inputs) {
    toy.w.mutable_grad() = at::Tensor();  // the optimizer's zero_grad
    return graph.Run(toy.Forward(), inputs, labels, 0.5);
  };
  step(a);                                         // eager
  EXPECT_DOUBLE_EQ(step(a).item<double>(), 28.0);  // recorded, then replayed
  ASSERT_TRUE(graph.recorded());
  const at::Tensor recorded_grad = toy.w.grad();
  ASSERT_TRUE(recorded_grad.defined());
  EXPECT_DOUBLE_EQ(step(a).item<double>(), 28.0);  // replayed: the graph's loss, a copy
  EXPECT_TRUE(toy.w.grad().is_same(recorded_grad));
  EXPECT_EQ(replays, 2);
  EXPECT_EQ(toy.calls, 2);  // the eager step and the recording; replays run no host code
  EXPECT_FALSE(destroyed);

  step(b);  // another shape: the graph goes, the step runs eagerly
  EXPECT_TRUE(destroyed);
  EXPECT_TRUE(graph.dropped());
  EXPECT_EQ(graph.failure(), "rows of another shape than the recording's ([2, 3] against [1, 3])");
  EXPECT_EQ(toy.calls, 3);
  EXPECT_FALSE(toy.w.grad().is_same(recorded_grad));
  step(a);  // and so do the steps after it
  EXPECT_EQ(toy.calls, 4);
  EXPECT_EQ(replays, 2);
}

// Recording waits for kEagerSteps steps of the same shape: a job whose rows change length would
// otherwise hold a graph (a step's memory) for the few steps that match it.
TEST(StepGraph, RecordsOnlyRowsOfTheShapeTheEagerStepsBeforeItHad) {
  ToyStep toy;
  auto recorder = std::make_unique<RefusingRecorder>();
  RefusingRecorder* seen = recorder.get();
  StepGraph graph(std::move(recorder), {toy.w}, /*eager_steps=*/2);
  const at::Tensor labels = torch::zeros({3}, torch::kLong);
  const at::Tensor a = torch::tensor({1, 2, 3}, torch::kLong);
  const at::Tensor b = torch::tensor({{1, 2, 3}}, torch::kLong);  // another shape
  for (const at::Tensor* inputs : {&a, &b, &b}) {
    toy.w.mutable_grad() = at::Tensor();
    graph.Run(toy.Forward(), *inputs, labels, 1.0);
  }
  EXPECT_EQ(seen->recordings, 0);  // b ran twice in a row: as many as the eager steps
  toy.w.mutable_grad() = at::Tensor();
  graph.Run(toy.Forward(), b, labels, 1.0);
  EXPECT_EQ(seen->recordings, 1);
}

// A recording caches the adapters' casts it meant to compute; after a refusal the eager rerun of
// the step must cast again rather than read those (on a GPU they were never written).
TEST(StepGraph, ARefusedRecordingsCachedCastsAreNotReused) {
  const at::Tensor a = torch::randn({2, 3}).requires_grad_(true);
  const at::Tensor b = torch::randn({4, 2}).requires_grad_(true);
  AdapterCastCache cache;
  const StepGraph::Forward forward = [&](const at::Tensor& inputs, const at::Tensor&,
                                         const at::Tensor& scale) {
    const AdapterCastCache::Casts casts = cache.Get({a, b}, at::kDouble);
    return (inputs.to(at::kDouble).sum() * casts.stacked_a.sum() * scale).detach();
  };
  StepGraph graph(std::make_unique<RefusingRecorder>(), {a, b}, /*eager_steps=*/0);
  AdapterCastCache::NewStep();  // as every step begins
  graph.Run(forward, torch::ones({3}, torch::kLong), torch::zeros({3}, torch::kLong), 1.0);
  EXPECT_FALSE(graph.failure().empty());
  EXPECT_EQ(cache.fills(), 2);  // the recording's, then the eager rerun's own
}

}  // namespace
}  // namespace qlorad::trainer
