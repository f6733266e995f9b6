#include "worker/trainer/train/classify.h"

#include <torch/torch.h>

#include "worker/trainer/data/class_labels.h"
#include "worker/trainer/model/adapter.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/train/classification_head.h"
#include "worker/trainer/train/inference_model.h"

namespace qlorad::trainer {

StatusOr<ClassifyResult> Classify(const ClassifyOptions& options) {
  QLORAD_ASSIGN_OR_RETURN(const AdapterHead adapter,
                          ReadAdapterHead(options.adapter_dir, options.label_field));
  const ClassificationHead& head = adapter.head;
  const std::string& label_field = adapter.label_field;
  if (label_field.empty()) {
    return InvalidArgument("--label-field: the adapter has no " + std::string(kLabelsFile) +
                           " naming the records' label field");
  }
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
