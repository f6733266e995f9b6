#include "worker/trainer/train/classification_head.h"

#include "worker/trainer/data/dataset.h"
#include "worker/trainer/io/json_file.h"
#include "worker/trainer/weights/hf_weights.h"

namespace qlorad::trainer {

namespace {

constexpr const char* kScoreWeight = "score.weight";

}  // namespace

StatusOr<ClassificationHead> MakeClassificationHead(const std::string& model_dir, int64_t hidden,
                                                    std::vector<std::string> labels, uint64_t seed,
                                                    at::Device device) {
  const int64_t classes = static_cast<int64_t>(labels.size());
  QLORAD_ASSIGN_OR_RETURN(const HfWeights weights, HfWeights::Open(model_dir));
  at::Tensor weight;
  if (weights.Has(kScoreWeight)) {
    QLORAD_ASSIGN_OR_RETURN(weight, weights.Get(kScoreWeight, {classes, hidden}, at::kFloat));
  } else {
    QLORAD_ASSIGN_OR_RETURN(const nlohmann::json config, ReadJsonFile(model_dir + "/config.json"));
    const double range = config.value("initializer_range", 0.02);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
    weight = at::empty({classes, hidden}, at::kFloat).normal_(0.0, range, generator);
  }
  return ClassificationHead{weight.to(device).contiguous().set_requires_grad(true),
                            std::move(labels)};
}

at::Tensor ClassLogits(const ClassificationHead& head, const at::Tensor& hidden) {
  return at::matmul(hidden.to(at::kFloat), head.weight.t());
}

ClassificationSums ClassifyRows(const ClassificationHead& head, const at::Tensor& hidden,
                                const at::Tensor& labels) {
  const at::Tensor logits = ClassLogits(head, hidden);
  const at::Tensor loss =
      at::cross_entropy_loss(logits, labels, /*weight=*/{}, at::Reduction::Sum, kIgnoreLabel);
  const at::Tensor correct =
      (logits.detach().argmax(-1).eq(labels) & labels.ne(kIgnoreLabel)).sum();
  return {loss, correct};
}

}  // namespace qlorad::trainer
