// The two ways dtypes are named in what the trainer reads: our short precision names (spec
// train.precision, eval --precision, export --dtype) and the torch names that Hugging Face
// config.json files and bitsandbytes quant states use. Each caller words its own error, naming
// its field or file.
#pragma once

#include <ATen/core/ScalarType.h>

#include <optional>
#include <string>

#include "common/spec_choices.h"
#include "common/status.h"

namespace qlorad::trainer {

// The spec's precision (train.precision, lora.compute_precision) as a torch dtype.
at::ScalarType ScalarTypeOf(Precision precision);

// bf16 | fp16 | fp32 (a command-line flag); nullopt for anything else.
std::optional<at::ScalarType> DtypeFromPrecision(const std::string& name);

// DtypeFromPrecision, or INVALID_ARGUMENT "FIELD: expected bf16, fp16 or fp32, got 'NAME'".
StatusOr<at::ScalarType> ParsePrecision(const std::string& name, const std::string& field);

// bfloat16 | float16 | float32; nullopt for anything else.
std::optional<at::ScalarType> DtypeFromTorchName(const std::string& name);

// The inverse of DtypeFromTorchName; "float32" for types it does not name.
std::string TorchDtypeName(at::ScalarType type);

}  // namespace qlorad::trainer
