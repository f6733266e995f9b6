#include "worker/trainer/runtime/event_sink.h"

#include <unistd.h>

#include <cmath>
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
  std::string text =
      Format("step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tok/s  vram %.1f MiB  %.1fs",
             static_cast<long long>(m.step), static_cast<long long>(m.total_steps), m.loss, m.lr,
             m.grad_norm, m.tokens_per_s, static_cast<double>(m.vram_allocated_bytes) / (1 << 20),
             m.wall_time_s);
  if (m.eval_loss) {
    text += Format("  eval_loss %.4f  eval_ppl %.3f", *m.eval_loss, std::exp(*m.eval_loss));
    if (m.eval_accuracy) text += Format("  eval_acc %.4f", *m.eval_accuracy);
  }
  Emit(events::MetricsLine(m), text);
}

void EventSink::MicroBatchReduced(const events::MicroBatchReduced& reduced) {
  Emit(events::MicroBatchReducedLine(reduced), "warning: " + reduced.message);
}

void EventSink::Log(const std::string& level, const std::string& message) {
  Emit(events::LogLine(level, message), level + ": " + message);
}

void EventSink::Checkpoint(int64_t step, const std::string& path) {
  Emit(events::CheckpointLine(step, path),
       Format("checkpoint at step %lld: %s", static_cast<long long>(step), path.c_str()));
}

void EventSink::Done(const events::Done& done) {
  std::string text = Format(
      "done after %lld steps%s, final loss %.4f; adapter in %s", static_cast<long long>(done.steps),
      done.stopped_early ? " (stopped early)" : "", done.final_loss, done.adapter_path.c_str());
  if (done.best) {
    text += Format("; best eval loss %.4f at step %lld, adapter in %s", done.best->eval_loss,
                   static_cast<long long>(done.best->step), done.best->adapter_path.c_str());
  }
  Emit(events::DoneLine(done), text);
}

void EventSink::Error(const std::string& message, const std::string& field) {
  Emit(events::ErrorLine(message, field), "error: " + message);
}

}  // namespace qlorad::trainer
