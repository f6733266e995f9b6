// The web dashboard: one self-contained HTML page (no CDN) that polls /api/jobs, and the JSON
// that endpoint serves.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "qlorad/v1/common.pb.h"

namespace qlorad::server {

using LossCurve = std::vector<std::pair<int64_t, double>>;

const std::string& DashboardHtml();

// Keeps at most max_points, evenly spread, always including the last point.
LossCurve Downsample(const LossCurve& curve, size_t max_points);

struct JobCurves {
  LossCurve loss;       // training loss per step (rank 0)
  LossCurve eval_loss;  // eval loss per evaluated step; empty without data.validation
};

// {"jobs":[{"id","name","state","attempt","step","total_steps","loss","error","worker_id",
//           "created_unix_ms","finished_unix_ms","adapter_path","loss_curve":[[step,loss],...],
//           "eval_loss_curve":[[step,eval_loss],...],"eval_loss":the last one or null,
//           "best":{"step","eval_loss","checkpoint_path","adapter_path"} or null,
//           "stopped_early"}]}
nlohmann::json JobsJson(const std::vector<v1::Job>& jobs,
                        const std::map<std::string, JobCurves>& curves);

}  // namespace qlorad::server
