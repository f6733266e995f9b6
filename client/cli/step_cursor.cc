#include "client/cli/step_cursor.h"

#include <algorithm>

namespace qlorad::cli {

bool StepCursor::IsNew(const qlorad::v1::StepMetrics& m) {
  const std::pair<int32_t, int64_t> at{m.attempt(), m.step()};
  const auto it = last_.find(m.rank());
  if (it != last_.end() && at <= it->second) return false;
  last_[m.rank()] = at;
  return true;
}

int64_t StepCursor::ResumeFrom() const {
  if (last_.empty()) return from_step_;
  int64_t lowest = last_.begin()->second.second;
  for (const auto& [rank, at] : last_) lowest = std::min(lowest, at.second);
  return lowest;
}

}  // namespace qlorad::cli
