// `qlorad-train launch --nproc N JOB`: N local ranks of one job without a coordinator. Each rank
// is a real `qlorad-train run` process; they rendezvous on a free loopback port. Rank 0's stdout
// passes through unchanged (one event stream for the job); every other line goes to stderr
// prefixed "[rank R] ". When a rank fails, the others are stopped and its exit code is returned.
#pragma once

#include <string>

namespace qlorad::trainer {

struct LaunchOptions {
  int nproc = 1;
  std::string spec_path;
  bool json = false;
  std::string device;  // passed on as --device when set
  std::string resume;  // passed on as --resume when set
  std::string self;    // the qlorad-train executable
};

int Launch(const LaunchOptions& options);

}  // namespace qlorad::trainer
