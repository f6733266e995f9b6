// The trainer's event lines: how qlorad-train tells its supervisor (qlorad-worker, or a person
// reading `--json` output) what is happening. One JSON object per line on stdout, each with an
// "event" key:
//   {"event":"started","pid":..,"total_steps":..,"device":"cpu","rank":0,"world_size":1}
//   {"event":"metrics","step":..,"total_steps":..,"loss":..,"lr":..,"grad_norm":..,
//    "tokens_per_s":..,"vram_allocated_bytes":..,"vram_reserved_bytes":..,"vram_peak_bytes":..,
//    "wall_time_s":..,"rank":0}
//   {"event":"log","level":"info","message":".."}
//   {"event":"checkpoint","step":..,"path":"/abs/dir"}
//   {"event":"done","steps":..,"adapter_path":"/abs/dir","final_loss":..}
//   {"event":"error","message":"..","field":"data.path"}     (field may be empty)
// Paths are absolute. A reader must ignore keys it does not know (the format grows).
#pragma once

#include <cstdint>
#include <string>

namespace qlorad::events {

struct Metrics {
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  int64_t vram_allocated_bytes = 0;
  int64_t vram_reserved_bytes = 0;
  int64_t vram_peak_bytes = 0;
  double wall_time_s = 0;
  int rank = 0;
};

std::string StartedLine(int64_t pid, int64_t total_steps, const std::string& device, int rank,
                        int world_size);
std::string MetricsLine(const Metrics& m);
std::string LogLine(const std::string& level, const std::string& message);
std::string CheckpointLine(int64_t step, const std::string& path);
std::string DoneLine(int64_t steps, const std::string& adapter_path, double final_loss);
std::string ErrorLine(const std::string& message, const std::string& field = "");

}  // namespace qlorad::events
