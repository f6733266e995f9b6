#include "worker/trainer/runtime/event_sink.h"

#include <unistd.h>

#include <cstdio>
#include <ostream>

namespace qlorad::trainer {

namespace {

std::string Format(const char* fmt, auto... args) {
  char buf[512];
  std::snprintf(buf, sizeof(buf), fmt, args...);
  return buf;
}

}  // namespace

void EventSink::Emit(const std::string& json_line, const std::string& text) {
  // Flushed per line: the agent forwards events as they come, and a crash must not eat the tail.
  if (json_) {
    out_ << json_line << std::endl;
  } else {
    err_ << text << std::endl;
  }
}

void EventSink::Started(int64_t total_steps, const std::string& device, int rank, int world_size) {
  Emit(events::StartedLine(getpid(), total_steps, device, rank, world_size),
       Format("started: %lld steps on %s (rank %d of %d)", static_cast<long long>(total_steps),
              device.c_str(), rank, world_size));
}

void EventSink::Metrics(const events::Metrics& m) {
  Emit(
      events::MetricsLine(m),
      Format("step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tok/s  vram %.1f MiB  %.1fs",
             static_cast<long long>(m.step), static_cast<long long>(m.total_steps), m.loss, m.lr,
             m.grad_norm, m.tokens_per_s, static_cast<double>(m.vram_allocated_bytes) / (1 << 20),
             m.wall_time_s));
}

void EventSink::Log(const std::string& level, const std::string& message) {
  Emit(events::LogLine(level, message), level + ": " + message);
}

void EventSink::Checkpoint(int64_t step, const std::string& path) {
  Emit(events::CheckpointLine(step, path),
       Format("checkpoint at step %lld: %s", static_cast<long long>(step), path.c_str()));
}

void EventSink::Done(int64_t steps, const std::string& adapter_path, double final_loss) {
  Emit(events::DoneLine(steps, adapter_path, final_loss),
       Format("done after %lld steps, final loss %.4f; adapter in %s",
              static_cast<long long>(steps), final_loss, adapter_path.c_str()));
}

void EventSink::Error(const std::string& message, const std::string& field) {
  Emit(events::ErrorLine(message, field), "error: " + message);
}

}  // namespace qlorad::trainer
