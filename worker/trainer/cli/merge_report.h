// `export`'s comparison of the two merges (train/merge_comparison.h) as the user sees it: with
// --json one {"type": "merge_comparison", ...} line on stdout listing every tensor; otherwise
// log lines with the overall figures, the tensors that differ most and the losses.
#pragma once

#include <string>

#include "worker/trainer/runtime/event_sink.h"
#include "worker/trainer/train/merge_comparison.h"

namespace qlorad::trainer {

void ReportMergeComparison(const MergeComparison& comparison, MergeInto written,
                           const std::string& data_path, bool json, EventSink& events);

}  // namespace qlorad::trainer
