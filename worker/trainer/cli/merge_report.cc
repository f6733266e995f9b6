#include "worker/trainer/cli/merge_report.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

namespace qlorad::trainer {

namespace {

constexpr size_t kTensorsShown = 5;  // in text; --json lists them all

std::string Fixed(const char* format, double a, double b) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), format, a, b);
  return buf;
}

}  // namespace

void ReportMergeComparison(const MergeComparison& c, MergeInto written,
                           const std::string& data_path, bool json, EventSink& events) {
  if (json) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const TensorDifference& t : c.tensors) {
      tensors.push_back(
          {{"name", t.name}, {"max_abs", t.max_abs}, {"mean_abs", t.mean_abs}, {"numel", t.numel}});
    }
    nlohmann::json line = {{"type", "merge_comparison"}, {"written", MergeIntoName(written)},
                           {"tensors", tensors},         {"identical_tensors", c.identical},
                           {"max_abs", c.max_abs},       {"mean_abs", c.mean_abs}};
    if (c.examples > 0) {
      line["loss"] = {{"data", data_path},
                      {"examples", c.examples},
                      {"tokens", c.tokens},
                      {"max_abs", c.loss_max_abs},
                      {"mean_abs", c.loss_mean_abs},
                      {"nf4_mean_loss", c.nf4_mean_loss},
                      {"original_mean_loss", c.original_mean_loss}};
    }
    std::cout << line.dump() << "\n";
    return;
  }
  events.Log("info", "merge into nf4 vs into original: " + std::to_string(c.tensors.size()) +
                         " tensors differ (" + std::to_string(c.identical) + " identical), " +
                         Fixed("max abs %.3e, mean abs %.3e", c.max_abs, c.mean_abs) +
                         "; the written merge is " + MergeIntoName(written));
  std::vector<const TensorDifference*> largest;
  for (const TensorDifference& t : c.tensors) largest.push_back(&t);
  const size_t shown = std::min(kTensorsShown, largest.size());
  std::partial_sort(
      largest.begin(), largest.begin() + static_cast<std::ptrdiff_t>(shown), largest.end(),
      [](const TensorDifference* a, const TensorDifference* b) { return a->max_abs > b->max_abs; });
  for (size_t i = 0; i < shown; ++i) {
    events.Log("info", "  " + largest[i]->name +
                           Fixed(": max abs %.3e, mean abs %.3e", largest[i]->max_abs,
                                 largest[i]->mean_abs));
  }
  if (c.examples > 0) {
    events.Log(
        "info",
        "per-token loss on the first " + std::to_string(c.examples) + " examples of " + data_path +
            " (" + std::to_string(c.tokens) +
            " tokens): " + Fixed("nf4 %.6f, original %.6f", c.nf4_mean_loss, c.original_mean_loss) +
            Fixed(", max abs difference %.3e, mean abs %.3e", c.loss_max_abs, c.loss_mean_abs));
  }
}

}  // namespace qlorad::trainer
