// Which steps a follower has shown, so that a metrics stream reopened after a reconnect starts
// where the last one left off and no step is printed twice. The coordinator sends each rank's
// steps in the order they arrived, so (attempt, step) only grows per rank: a restarted attempt
// may repeat step numbers, and those are new.
#pragma once

#include <cstdint>
#include <map>
#include <utility>

#include "qlorad/v1/common.pb.h"

namespace qlorad::cli {

class StepCursor {
 public:
  explicit StepCursor(int64_t from_step) : from_step_(from_step) {}

  // True the first time a step is seen (and records it); false for a repeat.
  bool IsNew(const qlorad::v1::StepMetrics& m);
  // The from_step for the next stream: the lowest last step over the ranks seen (the steps it
  // repeats are then filtered by IsNew), or the first from_step while nothing was seen.
  int64_t ResumeFrom() const;

 private:
  int64_t from_step_;
  std::map<int32_t, std::pair<int32_t, int64_t>> last_;  // rank -> (attempt, step)
};

}  // namespace qlorad::cli
