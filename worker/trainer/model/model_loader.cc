#include "worker/trainer/model/model_loader.h"

#include <map>
#include <regex>
#include <set>

#include "worker/trainer/model/qlora_linear.h"
#include "worker/trainer/weights/bnb4bit_reader.h"
#include "worker/trainer/weights/hf_weights.h"

namespace qlorad::trainer {

namespace {

// "model.layers.<i>.self_attn.q_proj.weight" and the like: the weights NamedLinears() holds.
bool IsDecoderProjectionWeight(const std::string& name) {
  static const std::regex kProjection(
      R"(model\.layers\.\d+\.(self_attn\.(q|k|v|o)|mlp\.(gate|up|down))_proj\.weight)");
  return std::regex_match(name, kProjection);
}

// A tensor of `shape` that holds one element: it stands in for a weight kept elsewhere, and the
// model takes it as it is (already in `dtype` on `device`, so no copy is made).
at::Tensor Placeholder(at::IntArrayRef shape, at::ScalarType dtype, at::Device device) {
  return at::zeros({}, at::TensorOptions().dtype(dtype).device(device)).expand(shape);
}

// The weight's stand-in in the model once `sink` has it.
ops::NF4Weight NF4Placeholder(const ops::NF4Weight& weight) {
  ops::NF4Weight placeholder = weight;
  const at::Device device = weight.packed.device();
  placeholder.packed = Placeholder(weight.packed.sizes(), weight.packed.scalar_type(), device);
  placeholder.absmax = Placeholder(weight.absmax.sizes(), weight.absmax.scalar_type(), device);
  return placeholder;
}

std::string ModuleOf(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - std::string(".weight").size());
}

}  // namespace

StatusOr<LoadedModel> LoadLlamaModel(const std::string& model_dir, const LlamaConfig& config,
                                     bool prequantized, at::Device device, at::ScalarType dtype,
                                     std::optional<QuantizeOnLoad> quantize,
                                     FrozenWeightSink* sink) {
  if (prequantized && !Nf4OpsAvailable(device.type())) {
    return FailedPrecondition("model.path: " + model_dir +
                              " is a bitsandbytes 4-bit checkpoint, and NF4 weights on " +
                              device.str() +
                              " need the qlorad_ops library with kernels for "
                              "that device, which this build lacks");
  }
  QLORAD_ASSIGN_OR_RETURN(HfWeights weights, HfWeights::Open(model_dir));
  LoadedModel loaded;
  std::map<std::string, ops::NF4Weight> stored;
  std::set<std::string> quantized_here;
  // Stores an NF4 projection for UseNF4 below: whole, or a placeholder once the sink has it.
  auto store = [&](const std::string& name, const ops::NF4Weight& weight) {
    if (sink == nullptr) {
      stored.emplace(name, weight);
      return;
    }
    const ops::NF4Weight on_device = weight.to(device);
    sink->TakeNF4(ModuleOf(name), on_device);
    stored.emplace(name, NF4Placeholder(on_device));
  };
  auto source = [&](const std::string& name,
                    const std::vector<int64_t>& shape) -> StatusOr<at::Tensor> {
    if (!prequantized || !IsBnb4bitWeight(weights, name)) {
      QLORAD_ASSIGN_OR_RETURN(at::Tensor dense, weights.Get(name, shape, at::kFloat));
      if (!IsDecoderProjectionWeight(name)) return dense;
      if (!quantize) {
        if (sink == nullptr) return dense;
        // A dense frozen projection (quantization none), as the tensor the model would have held
        // (BuildLlamaModel's conversion).
        sink->TakeDense(ModuleOf(name), dense.to(device, dtype));
        return Placeholder(shape, dtype, device);
      }
#ifdef QLORAD_HAVE_NF4_OPS
      // The tensor QLoraLinear would have held (BuildLlamaModel's conversion), through the same
      // quantizer it would have called.
      store(name, ops::QuantizeNF4(dense.to(device, dtype), quantize->block_size,
                                   quantize->double_quant));
      quantized_here.insert(name);
#else
      return dense;  // no quantizer in this build: ApplyQLora reports it
#endif
    } else {
      QLORAD_ASSIGN_OR_RETURN(ops::NF4Weight w, LoadBnbNF4Weight(weights, name, shape));
      store(name, w);
    }
    // UseNF4 below swaps in the stored weight, so no dense copy is ever made.
    return Placeholder(shape, dtype, device);
  };
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
