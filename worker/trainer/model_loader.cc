#include "worker/trainer/model_loader.h"

#include <map>
#include <regex>
#include <set>

#include "worker/trainer/bnb_checkpoint.h"
#include "worker/trainer/hf_weights.h"
#include "worker/trainer/qlora_linear.h"

namespace qlorad::trainer {

namespace {

// "model.layers.<i>.self_attn.q_proj.weight" and the like: the weights NamedLinears() holds.
bool IsDecoderProjectionWeight(const std::string& name) {
  static const std::regex kProjection(
      R"(model\.layers\.\d+\.(self_attn\.(q|k|v|o)|mlp\.(gate|up|down))_proj\.weight)");
  return std::regex_match(name, kProjection);
}

}  // namespace

StatusOr<LoadedModel> LoadLlamaModel(const std::string& model_dir, const LlamaConfig& config,
                                     bool prequantized, at::Device device, at::ScalarType dtype,
                                     std::optional<QuantizeOnLoad> quantize) {
  if (prequantized && !Nf4OpsAvailable(device.type())) {
    return FailedPrecondition("model.path: " + model_dir +
                              " is a bitsandbytes 4-bit checkpoint, and NF4 weights on " +
                              device.str() +
                              " need the qlorad_ops library with kernels for "
                              "that device, which this build lacks");
  }
  QLORAD_ASSIGN_OR_RETURN(HfWeights weights, HfWeights::Open(model_dir));
  std::map<std::string, ops::NF4Weight> stored;
  std::set<std::string> quantized_here;
  auto source = [&](const std::string& name,
                    const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
    if (!prequantized || !IsBnb4bitWeight(weights, name)) {
      QLORAD_ASSIGN_OR_RETURN(at::Tensor dense, weights.Get(name, shape, at::kFloat));
      if (!quantize || !IsDecoderProjectionWeight(name)) return dense;
#ifdef QLORAD_HAVE_NF4_OPS
      // The tensor QLoraLinear would have held (BuildLlamaModel's conversion), through the same
      // quantizer it would have called.
      stored.emplace(name, ops::QuantizeNF4(dense.to(device, dtype), quantize->block_size,
                                            quantize->double_quant));
      quantized_here.insert(name);
#else
      return dense;  // no quantizer in this build: ApplyQLora reports it
#endif
    } else {
      QLORAD_ASSIGN_OR_RETURN(ops::NF4Weight w, LoadBnbNF4Weight(weights, name, shape));
      stored.emplace(name, std::move(w));
    }
    // A zero-stride placeholder already in `dtype` on `device`: the model takes it without a
    // copy, and UseNF4 below swaps in the stored weight, so no dense copy is ever made.
    return at::zeros({}, at::TensorOptions().dtype(dtype).device(device)).expand(shape);
  };
  LoadedModel loaded;
  QLORAD_ASSIGN_OR_RETURN(loaded.model, BuildLlamaModel(config, source, device, dtype));
  for (auto& [name, linear] : loaded.model->NamedLinears()) {
    auto it = stored.find(name + ".weight");
    if (it == stored.end()) continue;
    linear->UseNF4(it->second);
    if (quantized_here.count(it->first) == 0) ++loaded.prequantized_layers;
    stored.erase(it);
  }
  if (!stored.empty()) {
    const std::string& name = stored.begin()->first;
    return InvalidArgument(weights.FileOf(name) + ": tensor '" + name +
                           "' is stored in bitsandbytes 4-bit form, but only linear projections "
                           "can be NF4 here");
  }
  if (prequantized && loaded.prequantized_layers == 0) {
    return InvalidArgument(model_dir +
                           "/config.json: quantization_config says bitsandbytes 4-bit, but no "
                           "projection weight has a quant_state.bitsandbytes__nf4 tensor");
  }
  return loaded;
}

}  // namespace qlorad::trainer
