#include "worker/trainer/weights/bnb4bit_reader.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/nf4_format.h"
#include "worker/trainer/io/json_file.h"
#include "worker/trainer/runtime/dtype_names.h"

namespace qlorad::trainer {

using nlohmann::json;

namespace {

std::string QuantStateName(const std::string& weight_name, const std::string& quant_type) {
  return weight_name + ".quant_state.bitsandbytes__" + quant_type;
}

std::string Where(const HfWeights& weights, const std::string& tensor) {
  return weights.FileOf(tensor) + ": tensor '" + tensor + "'";
}

std::string Sizes(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

constexpr int64_t kAnyCount = -1;

// A companion tensor of `weight_name` with its stored dtype and element count checked (bnb keeps
// some of them 2-D, so only the count is a fact of the format).
StatusOr<at::Tensor> Companion(const HfWeights& weights, const std::string& weight_name,
                               const std::string& name, at::ScalarType dtype, int64_t numel) {
  if (!weights.Has(name)) {
    return InvalidArgument(weights.FileOf(weight_name) + ": tensor '" + name +
                           "' is missing (needed by the bitsandbytes 4-bit weight '" + weight_name +
                           "')");
  }
  QLORAD_ASSIGN_OR_RETURN(at::Tensor t, weights.GetStored(name));
  if (t.scalar_type() != dtype || (numel != kAnyCount && t.numel() != numel)) {
    return InvalidArgument(
        Where(weights, name) + ": expected " + c10::toString(dtype) + " with " +
        (numel == kAnyCount ? std::string("any count of") : std::to_string(numel)) +
        " elements, got " + c10::toString(t.scalar_type()) + " of shape " + Sizes(t));
  }
  return t;
}

// The non-tensor half of bnb's QuantState, as packed into the quant_state tensor.
struct QuantStateFields {
  int64_t blocksize = 0;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  bool nested = false;
  int64_t nested_blocksize = 0;
  float nested_offset = 0;
};

StatusOr<at::ScalarType> TorchDtypeFromBnb(const std::string& name) {
  if (std::optional<at::ScalarType> type = DtypeFromTorchName(name)) return *type;
  return InvalidArgument("dtype: '" + name + "' is not float32, float16 or bfloat16");
}

StatusOr<QuantStateFields> ParseQuantState(const at::Tensor& bytes) {
  json j;
  try {
    j = json::parse(std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()),
                                static_cast<size_t>(bytes.numel())));
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return InvalidArgument("expected a JSON object");
  if (!j.contains("quant_type") || !j["quant_type"].is_string()) {
    return InvalidArgument("quant_type: missing or not a string");
  }
  if (j["quant_type"] != "nf4") {
    return InvalidArgument("quant_type: '" + j["quant_type"].get<std::string>() +
                           "' is not supported (only nf4)");
  }
  QuantStateFields f;
  if (!j.contains("blocksize") || !j["blocksize"].is_number_integer()) {
    return InvalidArgument("blocksize: missing or not an integer");
  }
  f.blocksize = j["blocksize"].get<int64_t>();
  if (f.blocksize < kernels::kMinBlocksize || f.blocksize > kernels::kMaxBlocksize ||
      (f.blocksize & (f.blocksize - 1)) != 0) {
    return InvalidArgument("blocksize: " + std::to_string(f.blocksize) +
                           " is not a power of two in [" + std::to_string(kernels::kMinBlocksize) +
                           ", " + std::to_string(kernels::kMaxBlocksize) + "]");
  }
  if (!j.contains("dtype") || !j["dtype"].is_string()) {
    return InvalidArgument("dtype: missing or not a string");
  }
  QLORAD_ASSIGN_OR_RETURN(f.dtype, TorchDtypeFromBnb(j["dtype"].get<std::string>()));
  if (!j.contains("shape") || !j["shape"].is_array()) {
    return InvalidArgument("shape: missing or not an array");
  }
  for (const json& d : j["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) {
      return InvalidArgument("shape: expected non-negative integers, got " + j["shape"].dump());
    }
    f.shape.push_back(d.get<int64_t>());
  }
  // Double quantization is present exactly when QuantState.as_dict wrote the nested fields.
  f.nested = j.contains("nested_offset");
  if (f.nested) {
    if (!j["nested_offset"].is_number()) return InvalidArgument("nested_offset: not a number");
    // A Python float printed by json.dumps round-trips to the double of the fp32 offset, so this
    // narrowing gives back the stored fp32 value exactly.
    f.nested_offset = static_cast<float>(j["nested_offset"].get<double>());
    if (!j.contains("nested_blocksize") || !j["nested_blocksize"].is_number_integer()) {
      return InvalidArgument("nested_blocksize: missing or not an integer");
    }
    f.nested_blocksize = j["nested_blocksize"].get<int64_t>();
    if (f.nested_blocksize != kernels::kNestedBlocksize) {
      return InvalidArgument("nested_blocksize: " + std::to_string(f.nested_blocksize) +
                             " is not supported (only " +
                             std::to_string(kernels::kNestedBlocksize) + ")");
    }
  }
  return f;
}

// Our dequantizer uses the built-in NF4 table, so a file with another table is not NF4 as we know
// it; the comparison is bitwise because bnb stores the same float constants.
bool IsNF4Table(const at::Tensor& quant_map) {
  return std::memcmp(quant_map.data_ptr<float>(), kernels::kNF4Code, sizeof(kernels::kNF4Code)) ==
         0;
}

StatusOr<bool> OptionalBool(const json& q, const std::string& key, bool fallback,
                            const std::string& source) {
  if (!q.contains(key) || q[key].is_null()) return fallback;
  if (!q[key].is_boolean()) {
    return InvalidArgument(source + ": quantization_config." + key + ": expected true or false");
  }
  return q[key].get<bool>();
}

}  // namespace

StatusOr<std::optional<BnbQuantization>> ReadBnbQuantization(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  QLORAD_ASSIGN_OR_RETURN(const json config, ReadJsonFile(path));
  if (!config.is_object() || !config.contains("quantization_config") ||
      config["quantization_config"].is_null()) {
    return std::optional<BnbQuantization>();
  }
  const json& q = config["quantization_config"];
  if (!q.is_object()) return InvalidArgument(path + ": quantization_config: expected an object");
  const std::string method = q.value("quant_method", std::string());
  if (method != "bitsandbytes") {
    return InvalidArgument(path + ": quantization_config.quant_method: '" + method +
                           "' is not supported (only bitsandbytes 4-bit nf4)");
  }
  QLORAD_ASSIGN_OR_RETURN(const bool in_4bit, OptionalBool(q, "load_in_4bit", false, path));
  if (!in_4bit) {
    return InvalidArgument(path +
                           ": quantization_config.load_in_4bit: only 4-bit bitsandbytes "
                           "checkpoints are supported (8-bit is not)");
  }
  BnbQuantization bnb;
  // transformers' BitsAndBytesConfig defaults the 4-bit type to fp4.
  bnb.quant_type = q.value("bnb_4bit_quant_type", std::string("fp4"));
  if (bnb.quant_type != "nf4") {
    return InvalidArgument(path + ": quantization_config.bnb_4bit_quant_type: '" + bnb.quant_type +
                           "' is not supported (only nf4)");
  }
  QLORAD_ASSIGN_OR_RETURN(bnb.double_quant,
                          OptionalBool(q, "bnb_4bit_use_double_quant", false, path));
  bnb.compute_dtype =
      q.contains("bnb_4bit_compute_dtype") && q["bnb_4bit_compute_dtype"].is_string()
          ? q["bnb_4bit_compute_dtype"].get<std::string>()
          : "float32";
  return std::optional<BnbQuantization>(bnb);
}

bool IsBnb4bitWeight(const HfWeights& weights, const std::string& weight_name) {
  return weights.Has(QuantStateName(weight_name, "nf4")) ||
         weights.Has(QuantStateName(weight_name, "fp4"));
}

StatusOr<ops::NF4Weight> LoadBnbNF4Weight(const HfWeights& weights, const std::string& weight_name,
                                          const std::vector<int64_t>& shape) {
  const std::string state_name = QuantStateName(weight_name, "nf4");
  if (!weights.Has(state_name) && weights.Has(QuantStateName(weight_name, "fp4"))) {
    return InvalidArgument(Where(weights, QuantStateName(weight_name, "fp4")) +
                           ": quant_type fp4 is not supported (only nf4)");
  }
  QLORAD_ASSIGN_OR_RETURN(const at::Tensor state_bytes,
                          Companion(weights, weight_name, state_name, at::kByte, kAnyCount));
  StatusOr<QuantStateFields> parsed = ParseQuantState(state_bytes);
  if (!parsed.ok()) {
    return InvalidArgument(Where(weights, state_name) + ": " + parsed.status().message());
  }
  const QuantStateFields& f = *parsed;
  if (f.shape != shape) {
    return InvalidArgument(Where(weights, state_name) + ": shape " + json(f.shape).dump() +
                           " differs from the " + json(shape).dump() + " that config.json implies");
  }
  ops::NF4Weight w;
  w.shape = f.shape;
  w.blocksize = f.blocksize;
  w.double_quant = f.nested;
  w.dtype = f.dtype;
  int64_t numel = 1;  // not w.numel(): that lives in the ops library, which may be absent
  for (int64_t d : w.shape) numel *= d;
  const int64_t n_blocks = (numel + f.blocksize - 1) / f.blocksize;
  QLORAD_ASSIGN_OR_RETURN(w.packed,
                          Companion(weights, weight_name, weight_name, at::kByte, (numel + 1) / 2));
  const std::string map_name = weight_name + ".quant_map";
  QLORAD_ASSIGN_OR_RETURN(const at::Tensor quant_map,
                          Companion(weights, weight_name, map_name, at::kFloat, 16));
  if (!IsNF4Table(quant_map)) {
    return InvalidArgument(Where(weights, map_name) + ": not the NF4 code table");
  }
  QLORAD_ASSIGN_OR_RETURN(w.absmax, Companion(weights, weight_name, weight_name + ".absmax",
                                              f.nested ? at::kByte : at::kFloat, n_blocks));
  if (f.nested) {
    const int64_t nested_blocks = (n_blocks + f.nested_blocksize - 1) / f.nested_blocksize;
    QLORAD_ASSIGN_OR_RETURN(
        w.nested_absmax,
        Companion(weights, weight_name, weight_name + ".nested_absmax", at::kFloat, nested_blocks));
    QLORAD_ASSIGN_OR_RETURN(
        w.nested_code,
        Companion(weights, weight_name, weight_name + ".nested_quant_map", at::kFloat, 256));
    w.offset = at::scalar_tensor(f.nested_offset, at::kFloat);
  }
  return w;
}

}  // namespace qlorad::trainer
