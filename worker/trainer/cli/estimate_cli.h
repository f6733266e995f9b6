// qlorad-train estimate JOB.yaml [--free-gib X] [--json]
//   The job's GPU memory estimate (common/memory_estimate.h) term by term, the total GPU memory
//   it needs, and, against a device's free memory (--free-gib, else the CUDA device's own when
//   there is one), the activation options auto would choose, whether the job fits, the largest
//   data.max_seq_len that fits and the changes that would make the asked one fit. Without a
//   device, auto options are taken as on (the leanest the spec allows). Reads only the spec and
//   the model's config.json: nothing is loaded.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "common/status.h"

namespace qlorad::trainer {

struct EstimateCli {
  CLI::App* estimate = nullptr;
  std::string spec_path;
  std::optional<double> free_gib;
  std::optional<double> host_gib;
  bool json = false;
};

void AddEstimateSubcommand(CLI::App& app, EstimateCli& cli);
// nullopt when another subcommand was chosen.
std::optional<Status> RunEstimateSubcommand(const EstimateCli& cli);

}  // namespace qlorad::trainer
