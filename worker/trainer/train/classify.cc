#include "worker/trainer/train/classify.h"

#include <torch/torch.h>

#include <filesystem>

#include "worker/trainer/data/class_labels.h"
#include "worker/trainer/io/json_file.h"
#include "worker/trainer/model/adapter.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/train/classification_head.h"
#include "worker/trainer/train/inference_model.h"
#include "worker/trainer/weights/safetensors_torch.h"

namespace qlorad::trainer {

namespace {

// The adapter's score head, with its labels (labels.json, else "0".."N-1").
StatusOr<ClassificationHead> LoadHead(const ClassifyOptions& options, std::string* label_field) {
  const std::string path = options.adapter_dir + "/adapter_model.safetensors";
  QLORAD_ASSIGN_OR_RETURN(const SafetensorsFile file, SafetensorsFile::Open(path));
  const std::string key = WholeModuleKey(kScoreModule);
  const SafetensorsTensorInfo* info = file.Find(key);
  if (info == nullptr || info->shape.size() != 2) {
    return InvalidArgument(path + ": tensor '" + key + "' (the score head) is missing or not 2-D");
  }
  QLORAD_ASSIGN_OR_RETURN(const at::Tensor weight, ReadTensor(file, *info));
  ClassificationHead head{weight.to(at::kFloat), {}};
  const int64_t classes = weight.size(0);
  const std::string labels_path = options.adapter_dir + "/" + kLabelsFile;
  *label_field = options.label_field;
  if (std::filesystem::exists(labels_path)) {
    QLORAD_ASSIGN_OR_RETURN(const nlohmann::json j, ReadJsonFile(labels_path));
    try {
      for (int64_t i = 0; i < classes; ++i) {
        head.labels.push_back(j.at("id2label").at(std::to_string(i)).get<std::string>());
      }
      if (label_field->empty()) *label_field = j.at("label_field").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      return InvalidArgument(labels_path + ": " + e.what());
    }
  } else {
    for (int64_t i = 0; i < classes; ++i) head.labels.push_back(std::to_string(i));
  }
  if (label_field->empty()) {
    return InvalidArgument("--label-field: the adapter has no " + std::string(kLabelsFile) +
                           " naming the records' label field");
  }
  return head;
}

}  // namespace

StatusOr<ClassifyResult> Classify(const ClassifyOptions& options) {
  std::string label_field;
  QLORAD_ASSIGN_OR_RETURN(const ClassificationHead head, LoadHead(options, &label_field));
  QLORAD_ASSIGN_OR_RETURN(const LlamaConfig config, LoadLlamaConfig(options.model_dir));
  const ClassLabels classes{label_field, head.labels,
                            /*max_seq_len=*/config.max_position_embeddings};
  DataSpec data;
  data.path = options.data_path;
  QLORAD_ASSIGN_OR_RETURN(
      const Dataset dataset,
      LoadDataset(data, options.model_dir, {.vocab_size = config.vocab_size, .classes = &classes}));
  QLORAD_ASSIGN_OR_RETURN(LlamaModel model,
                          LoadModelForInference(options.model_dir, options.adapter_dir, at::kCPU,
                                                at::kFloat, std::nullopt, Task::kClassification));
  model->eval();
  at::NoGradGuard no_grad;
  ClassifyResult result;
  result.labels = head.labels;
  double loss = 0;
  int64_t correct = 0;
  for (const Document& doc : dataset.documents) {
    // The document is the example's tokens, then a filler whose label is the class.
    const int64_t length = static_cast<int64_t>(doc.input_ids.size()) - 1;
    const at::Tensor ids =
        at::tensor(doc.input_ids, at::kLong).slice(0, 0, length).view({1, length});
    const at::Tensor logits = ClassLogits(head, model->forward(ids)[0][length - 1]);
    const int64_t target = doc.labels.back();
    loss +=
        at::cross_entropy_loss(logits.unsqueeze(0), at::tensor({target}, at::kLong)).item<double>();
    const int64_t predicted = logits.argmax().item<int64_t>();
    correct += predicted == target ? 1 : 0;
    const at::Tensor row = logits.to(at::kDouble).contiguous();
    result.logits.emplace_back(row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
    result.targets.push_back(target);
    result.predictions.push_back(predicted);
  }
  const double n = static_cast<double>(dataset.documents.size());
  result.loss = loss / n;
  result.accuracy = static_cast<double>(correct) / n;
  return result;
}

}  // namespace qlorad::trainer
