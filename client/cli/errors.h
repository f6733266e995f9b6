// How qloractl prints an error: "error: <message>" as text, or with --json one JSON line
// {"type": "error", "code": ..., "message": ..., "exit_code": ...} (on stderr in both modes, so
// that stdout stays the data a script reads and the exit code still decides success).
#pragma once

#include <ostream>
#include <string_view>

namespace qlorad::cli {

// Prints the error and returns exit_code. `code` is a gRPC code name or a qloractl word
// ("USAGE", "UNREACHABLE", "JOB_FAILED", ...); the text form shows only the message.
int ReportError(std::ostream& err, bool json, std::string_view code, std::string_view message,
                int exit_code);

}  // namespace qlorad::cli
