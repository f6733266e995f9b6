// Bitsandbytes 4-bit checkpoints, the layout transformers saves for a model loaded with
// load_in_4bit: each quantized linear keeps `<name>.weight` (packed uint8, two codes a byte) and
// its QuantState as companion tensors `<name>.weight.absmax`, `.quant_map`, `.nested_absmax`,
// `.nested_quant_map` and `.quant_state.bitsandbytes__nf4` (uint8 bytes of a JSON object with
// quant_type, blocksize, dtype, shape and, when double-quantized, nested_blocksize and
// nested_offset). These become an ops::NF4Weight as they are: the stored bytes are never
// requantized.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/torch/nf4_ops.h"
#include "worker/trainer/weights/hf_weights.h"

namespace qlorad::trainer {

// config.json's quantization_config of a bitsandbytes 4-bit model.
struct BnbQuantization {
  std::string quant_type;  // always "nf4": anything else is refused
  bool double_quant = false;
  std::string compute_dtype;  // bnb_4bit_compute_dtype, informational
};

// nullopt when config.json has no quantization_config. A quantization_config we cannot train on
// (another method, 8-bit, fp4) is an error naming config.json and the field.
StatusOr<std::optional<BnbQuantization>> ReadBnbQuantization(const std::string& model_dir);

// Whether `weight_name` ("model.layers.0.mlp.up_proj.weight") is stored in bitsandbytes' 4-bit
// form, i.e. it has a quant_state companion of any quant_type.
bool IsBnb4bitWeight(const HfWeights& weights, const std::string& weight_name);

// The stored NF4 weight of `weight_name`, whose dequantized shape must be `shape`; CPU tensors.
// Errors name the file and the tensor: a missing companion, a quant_type other than nf4, a bad
// quant_state JSON, sizes that disagree with the shape.
StatusOr<ops::NF4Weight> LoadBnbNF4Weight(const HfWeights& weights, const std::string& weight_name,
                                          const std::vector<int64_t>& shape);

}  // namespace qlorad::trainer
