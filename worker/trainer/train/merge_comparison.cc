#include "worker/trainer/train/merge_comparison.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>

#include "worker/trainer/data/dataset.h"
#include "worker/trainer/model/adapter.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/train/eval.h"
#include "worker/trainer/train/merged_tensors.h"

namespace qlorad::trainer {

namespace {

Status CompareWeights(const LlamaModel& nf4, const LlamaModel& original, MergeComparison& out) {
  int64_t unused = 0;
  std::map<std::string, MergedTensor> originals;
  for (MergedTensor& t : MergedTensors(original, &unused)) originals.emplace(t.name, std::move(t));
  double sum = 0;
  int64_t count = 0;
  for (const MergedTensor& t : MergedTensors(nf4, &unused)) {
    auto it = originals.find(t.name);
    if (it == originals.end() || it->second.shape != t.shape) {
      return InvalidArgument("--original: tensor '" + t.name +
                             "' is missing or shaped differently there: not the same model");
    }
    at::NoGradGuard no_grad;
    const at::Tensor diff = (t.make() - it->second.make()).abs_().to(at::kDouble);
    const double max_abs = diff.max().item<double>();
    if (max_abs == 0) {
      ++out.identical;
      continue;
    }
    const double tensor_sum = diff.sum().item<double>();
    out.tensors.push_back(
        {t.name, max_abs, tensor_sum / static_cast<double>(diff.numel()), diff.numel()});
    out.max_abs = std::max(out.max_abs, max_abs);
    sum += tensor_sum;
    count += diff.numel();
  }
  out.mean_abs = count > 0 ? sum / static_cast<double>(count) : 0.0;
  return Status::Ok();
}

Status CompareLosses(const CompareOptions& options, const LlamaModel& nf4,
                     const LlamaModel& original, MergeComparison& out) {
  QLORAD_ASSIGN_OR_RETURN(const LlamaConfig config, LoadLlamaConfig(options.model_dir));
  QLORAD_ASSIGN_OR_RETURN(const Dataset dataset,
                          LoadDataset(*options.data, options.model_dir, {config.vocab_size}));
  at::NoGradGuard no_grad;
  double diff_sum = 0, nf4_sum = 0, original_sum = 0;
  for (const Document& doc : dataset.documents) {
    if (out.examples == options.max_examples) break;
    ++out.examples;
    const std::vector<double> a = DocumentTokenLosses(nf4, doc, at::kCPU);
    const std::vector<double> b = DocumentTokenLosses(original, doc, at::kCPU);
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = std::abs(a[i] - b[i]);
      out.loss_max_abs = std::max(out.loss_max_abs, d);
      diff_sum += d;
      nf4_sum += a[i];
      original_sum += b[i];
    }
    out.tokens += static_cast<int64_t>(a.size());
  }
  if (out.tokens > 0) {
    const double n = static_cast<double>(out.tokens);
    out.loss_mean_abs = diff_sum / n;
    out.nf4_mean_loss = nf4_sum / n;
    out.original_mean_loss = original_sum / n;
  }
  return Status::Ok();
}

}  // namespace

StatusOr<MergeComparison> CompareMerges(const CompareOptions& options) {
  Task task = Task::kCausalLm;
  if (options.adapter_dir) {
    QLORAD_ASSIGN_OR_RETURN(task, ReadAdapterTask(*options.adapter_dir));
  }
  QLORAD_ASSIGN_OR_RETURN(LlamaModel nf4, LoadMergeBase(options.model_dir, options.adapter_dir,
                                                        options.base, MergeInto::kNf4, task));
  QLORAD_ASSIGN_OR_RETURN(LlamaModel original,
                          LoadMergeBase(options.model_dir, options.adapter_dir, options.base,
                                        MergeInto::kOriginal, task));
  nf4->eval();
  original->eval();
  MergeComparison out;
  QLORAD_RETURN_IF_ERROR(CompareWeights(nf4, original, out));
  if (options.data && options.max_examples > 0) {
    QLORAD_RETURN_IF_ERROR(CompareLosses(options, nf4, original, out));
  }
  return out;
}

}  // namespace qlorad::trainer
