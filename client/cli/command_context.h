// What every qloractl command runs with: its options, a JobService stub, and where to print.
#pragma once

#include <ostream>

#include "client/cli/args.h"
#include "qlorad/v1/jobs.grpc.pb.h"

namespace qlorad::cli {

struct CommandContext {
  const CliOptions& options;
  qlorad::v1::JobService::StubInterface& stub;
  std::ostream& out;
  std::ostream& err;
  bool tty;          // stdout is a terminal: redraw progress in place
  int columns = 80;  // the terminal's width, when tty
};

}  // namespace qlorad::cli
