// How qlorad-train ends, which the worker agent and coordinator rely on: 0 done, 1 any other
// failure, 2 bad input (do not retry), 3 stopped by SIGTERM after a checkpoint (resume later),
// 4 no progress within parallel.timeout_s (the watchdog; retry from the last checkpoint).
#pragma once

#include <string>

#include "common/status.h"

namespace qlorad::trainer {

inline constexpr int kExitDone = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitBadInput = 2;
inline constexpr int kExitStopped = 3;
inline constexpr int kExitHung = 4;

int ExitCodeFor(const Status& status);

// The dotted spec field a message starts with ("data.path: ..." -> "data.path"), else "".
std::string ErrorField(const std::string& message);

}  // namespace qlorad::trainer
