#include "worker/trainer/train/merge_base.h"

#include "worker/trainer/model/model_loader.h"
#include "worker/trainer/model/qlora_linear.h"
#include "worker/trainer/train/inference_model.h"
#include "worker/trainer/weights/bnb4bit_reader.h"

namespace qlorad::trainer {

StatusOr<MergeInto> ParseMergeInto(const std::string& name, const std::string& field) {
  if (name == "nf4") return MergeInto::kNf4;
  if (name == "original") return MergeInto::kOriginal;
  return InvalidArgument(field + ": expected nf4 or original, got '" + name + "'");
}

const char* MergeIntoName(MergeInto into) {
  return into == MergeInto::kNf4 ? "nf4" : "original";
}

StatusOr<LlamaModel> LoadMergeBase(const std::string& model_dir,
                                   const std::optional<std::string>& adapter_dir,
                                   const MergeBase& base, MergeInto into, Task task) {
  QLORAD_ASSIGN_OR_RETURN(const std::optional<BnbQuantization> bnb, ReadBnbQuantization(model_dir));
  if (into == MergeInto::kOriginal) {
    const std::string dir = base.original_dir.value_or(model_dir);
    QLORAD_ASSIGN_OR_RETURN(const std::optional<BnbQuantization> original_bnb,
                            ReadBnbQuantization(dir));
    if (original_bnb) {
      return InvalidArgument(
          std::string(base.original_dir ? "--original" : "--merge-into") + ": " + dir +
          " is a bitsandbytes 4-bit checkpoint; merging into the original weights needs their "
          "16-bit Hugging Face directory (--original DIR)");
    }
    return LoadModelForInference(dir, adapter_dir, at::kCPU, at::kFloat, std::nullopt, task);
  }
  // A bitsandbytes checkpoint's projections are NF4 already; they load as stored.
  if (bnb) {
    return LoadModelForInference(model_dir, adapter_dir, at::kCPU, at::kFloat, std::nullopt, task);
  }
  if (base.quantization.type != QuantizationType::kNf4) {
    return InvalidArgument(
        "--merge-into: nf4 with quantization.type none: the adapter was trained against the "
        "16-bit weights; use --merge-into original");
  }
  if (!Nf4OpsAvailable(at::kCPU)) {
    return FailedPrecondition(
        "--merge-into: nf4 needs the NF4 operators (libqlorad_ops), which are not loaded");
  }
  return LoadModelForInference(
      model_dir, adapter_dir, at::kCPU, at::kFloat,
      QuantizeOnLoad{base.quantization.block_size, base.quantization.double_quant}, task);
}

}  // namespace qlorad::trainer
