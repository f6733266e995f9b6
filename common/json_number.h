// JSON has no NaN or infinity, yet a diverged step's loss is one, and must reach readers as what
// it is rather than as null (which reads as "no value") or as a line that fails to parse. Such a
// number is written as protobuf's JSON mapping writes it: the strings "NaN", "Infinity" and
// "-Infinity", which JavaScript's Number() and Python's float() read back.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>

namespace qlorad {

// A finite value as a JSON number; a non-finite one as its string.
nlohmann::json JsonNumber(double value);

// A JSON number, or one of JsonNumber's strings, as a double; nullopt for anything else.
std::optional<double> NumberFromJson(const nlohmann::json& value);

}  // namespace qlorad
