#include "worker/trainer/train/classification_head.h"

#include <filesystem>

#include "worker/trainer/data/dataset.h"
#include "worker/trainer/io/json_file.h"
#include "worker/trainer/model/adapter.h"
#include "worker/trainer/weights/hf_weights.h"
#include "worker/trainer/weights/safetensors_torch.h"

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

StatusOr<AdapterHead> ReadAdapterHead(const std::string& adapter_dir,
                                      const std::string& label_field) {
  const std::string path = adapter_dir + "/adapter_model.safetensors";
  QLORAD_ASSIGN_OR_RETURN(const SafetensorsFile file, SafetensorsFile::Open(path));
  const std::string key = WholeModuleKey(kScoreModule);
  const SafetensorsTensorInfo* info = file.Find(key);
  if (info == nullptr || info->shape.size() != 2) {
    return InvalidArgument(path + ": tensor '" + key + "' (the score head) is missing or not 2-D");
  }
  QLORAD_ASSIGN_OR_RETURN(const at::Tensor weight, ReadTensor(file, *info));
  AdapterHead out{{weight.to(at::kFloat), {}}, label_field};
  const int64_t classes = weight.size(0);
  const std::string labels_path = adapter_dir + "/" + kLabelsFile;
  if (std::filesystem::exists(labels_path)) {
    QLORAD_ASSIGN_OR_RETURN(const nlohmann::json j, ReadJsonFile(labels_path));
    try {
      for (int64_t i = 0; i < classes; ++i) {
        out.head.labels.push_back(j.at("id2label").at(std::to_string(i)).get<std::string>());
      }
      if (out.label_field.empty()) out.label_field = j.at("label_field").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      return InvalidArgument(labels_path + ": " + e.what());
    }
  } else {
    for (int64_t i = 0; i < classes; ++i) out.head.labels.push_back(std::to_string(i));
  }
  return out;
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
