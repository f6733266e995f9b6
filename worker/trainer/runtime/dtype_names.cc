#include "worker/trainer/runtime/dtype_names.h"

namespace qlorad::trainer {

namespace {

struct DtypeName {
  Precision precision;
  const char* torch;
  at::ScalarType type;
};

constexpr DtypeName kDtypeNames[] = {{Precision::kBf16, "bfloat16", at::kBFloat16},
                                     {Precision::kFp16, "float16", at::kHalf},
                                     {Precision::kFp32, "float32", at::kFloat}};

}  // namespace

at::ScalarType ScalarTypeOf(Precision precision) {
  for (const DtypeName& d : kDtypeNames) {
    if (precision == d.precision) return d.type;
  }
  return at::kFloat;
}

std::optional<at::ScalarType> DtypeFromPrecision(const std::string& name) {
  const std::optional<Precision> precision = ChoiceNamed<Precision>(name);
  if (!precision) return std::nullopt;
  return ScalarTypeOf(*precision);
}

StatusOr<at::ScalarType> ParsePrecision(const std::string& name, const std::string& field) {
  if (std::optional<at::ScalarType> type = DtypeFromPrecision(name)) return *type;
  return InvalidArgument(field + ": expected bf16, fp16 or fp32, got '" + name + "'");
}

std::optional<at::ScalarType> DtypeFromTorchName(const std::string& name) {
  for (const DtypeName& d : kDtypeNames) {
    if (name == d.torch) return d.type;
  }
  return std::nullopt;
}

std::string TorchDtypeName(at::ScalarType type) {
  for (const DtypeName& d : kDtypeNames) {
    if (type == d.type) return d.torch;
  }
  return "float32";
}

}  // namespace qlorad::trainer
