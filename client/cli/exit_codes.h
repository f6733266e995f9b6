// qloractl's exit codes; scripts rely on them (see `qloractl --help`).
#pragma once

namespace qlorad::cli {

inline constexpr int kExitOk = 0;           // done; for watch: the job COMPLETED
inline constexpr int kExitFailed = 1;       // a server error, or the job FAILED or was CANCELLED
inline constexpr int kExitUsage = 2;        // bad command line or unreadable spec file
inline constexpr int kExitUnreachable = 3;  // no coordinator answered at --server

}  // namespace qlorad::cli
