// The job spec's named choices as types. Each name table is written once, here: the spec parser
// checks a name against it (the error lists the names), and everything after the parser switches
// on the enum, so no later layer checks the strings again. Command-line flags that take the same
// names (--device, --dtype) use the same tables.
#pragma once

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qlorad {

enum class QuantizationType { kNf4, kNone };                // quantization.type
enum class Precision { kBf16, kFp16, kFp32 };               // train.precision, --dtype
enum class Scheduler { kCosine, kLinear, kConstant };       // train.scheduler
enum class DeviceChoice { kAuto, kCuda, kCpu };             // resources.device, --device
enum class StrategyChoice { kAuto, kSingle, kDdp, kFsdp };  // parallel.strategy
enum class CheckpointingChoice { kAuto, kOn, kOff };        // train.activation_checkpointing
enum class Task { kCausalLm, kClassification };             // task

template <typename E>
struct ChoiceNames;  // `static constexpr std::array<std::pair<std::string_view, E>, N> kNames`

template <>
struct ChoiceNames<QuantizationType> {
  static constexpr std::array<std::pair<std::string_view, QuantizationType>, 2> kNames = {
      {{"nf4", QuantizationType::kNf4}, {"none", QuantizationType::kNone}}};
};
template <>
struct ChoiceNames<Precision> {
  static constexpr std::array<std::pair<std::string_view, Precision>, 3> kNames = {
      {{"bf16", Precision::kBf16}, {"fp16", Precision::kFp16}, {"fp32", Precision::kFp32}}};
};
template <>
struct ChoiceNames<Scheduler> {
  static constexpr std::array<std::pair<std::string_view, Scheduler>, 3> kNames = {
      {{"cosine", Scheduler::kCosine},
       {"linear", Scheduler::kLinear},
       {"constant", Scheduler::kConstant}}};
};
template <>
struct ChoiceNames<DeviceChoice> {
  static constexpr std::array<std::pair<std::string_view, DeviceChoice>, 3> kNames = {
      {{"auto", DeviceChoice::kAuto}, {"cuda", DeviceChoice::kCuda}, {"cpu", DeviceChoice::kCpu}}};
};
template <>
struct ChoiceNames<StrategyChoice> {
  static constexpr std::array<std::pair<std::string_view, StrategyChoice>, 4> kNames = {
      {{"auto", StrategyChoice::kAuto},
       {"single", StrategyChoice::kSingle},
       {"ddp", StrategyChoice::kDdp},
       {"fsdp", StrategyChoice::kFsdp}}};
};

template <>
struct ChoiceNames<Task> {
  static constexpr std::array<std::pair<std::string_view, Task>, 2> kNames = {
      {{"causal_lm", Task::kCausalLm}, {"classification", Task::kClassification}}};
};

template <>
struct ChoiceNames<CheckpointingChoice> {
  static constexpr std::array<std::pair<std::string_view, CheckpointingChoice>, 3> kNames = {
      {{"auto", CheckpointingChoice::kAuto},
       {"true", CheckpointingChoice::kOn},
       {"false", CheckpointingChoice::kOff}}};
};

template <typename E>
std::string NameOf(E value) {
  for (const auto& [name, v] : ChoiceNames<E>::kNames) {
    if (v == value) return std::string(name);
  }
  return "?";
}

template <typename E>
std::optional<E> ChoiceNamed(std::string_view name) {
  for (const auto& [n, v] : ChoiceNames<E>::kNames) {
    if (n == name) return v;
  }
  return std::nullopt;
}

// "a, b, c": every name, sorted, for error messages.
template <typename E>
std::string ChoiceList() {
  std::vector<std::string_view> names;
  for (const auto& [name, v] : ChoiceNames<E>::kNames) names.push_back(name);
  std::sort(names.begin(), names.end());
  std::string list;
  for (std::string_view name : names) list += (list.empty() ? "" : ", ") + std::string(name);
  return list;
}

}  // namespace qlorad
