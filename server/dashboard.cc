#include "server/dashboard.h"

#include <algorithm>
#include <cctype>

#include "common/json_number.h"
#include "server/store.h"

namespace qlorad::server {
namespace {

nlohmann::json Points(const LossCurve& curve) {
  nlohmann::json points = nlohmann::json::array();
  for (const auto& [step, loss] : curve) points.push_back({step, JsonNumber(loss)});
  return points;
}

nlohmann::json BestJson(const v1::Job& job) {
  if (!job.has_best()) return nullptr;
  return {{"step", job.best().step()},
          {"eval_loss", JsonNumber(job.best().eval_loss())},
          {"checkpoint_path", job.best().checkpoint_path()},
          {"adapter_path", job.best().adapter_path()}};
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string Lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

}  // namespace

std::optional<double> EstimateSecondsLeft(const std::vector<v1::StepMetrics>& recent, int attempt,
                                          int64_t total_steps) {
  std::vector<const v1::StepMetrics*> steps;
  for (const auto& m : recent) {
    if (m.rank() == 0 && m.attempt() == attempt) steps.push_back(&m);
  }
  std::sort(steps.begin(), steps.end(),
            [](const auto* a, const auto* b) { return a->step() < b->step(); });
  if (steps.size() < 2 || total_steps <= 0) return std::nullopt;
  const size_t window = static_cast<size_t>(kEtaWindowSteps) + 1;  // steps, so one more row
  const size_t first = steps.size() > window ? steps.size() - window : 0;
  const v1::StepMetrics& a = *steps[first];
  const v1::StepMetrics& b = *steps.back();
  if (b.step() <= a.step() || b.wall_time_s() < a.wall_time_s()) return std::nullopt;
  const double per_step =
      (b.wall_time_s() - a.wall_time_s()) / static_cast<double>(b.step() - a.step());
  return per_step * static_cast<double>(std::max<int64_t>(0, total_steps - b.step()));
}

nlohmann::json JobJson(const JobRow& row) {
  const v1::Job& job = row.job;
  nlohmann::json eta = nullptr;
  if (row.eta_s) eta = *row.eta_s;
  return {{"id", job.id()},
          {"name", job.name()},
          {"state", JobStateName(job.state())},
          {"attempt", job.attempt()},
          {"restarts", job.restarts()},
          {"max_restarts", job.max_restarts()},
          {"priority", job.priority()},
          {"gpus", job.gpus()},
          {"step", job.last_step()},
          {"total_steps", job.total_steps()},
          {"loss", JsonNumber(job.last_loss())},
          {"error", job.error()},
          {"worker_id", job.worker_id()},
          {"created_unix_ms", job.created_unix_ms()},
          {"started_unix_ms", job.started_unix_ms()},
          {"finished_unix_ms", job.finished_unix_ms()},
          {"adapter_path", job.adapter_path()},
          {"best", BestJson(job)},
          {"stopped_early", job.stopped_early()},
          {"eta_s", eta}};
}

nlohmann::json JobsJson(const std::vector<JobRow>& jobs,
                        const std::map<std::string, JobCurves>& curves) {
  nlohmann::json list = nlohmann::json::array();
  for (const JobRow& row : jobs) {
    auto found = curves.find(row.job.id());
    const JobCurves curve = found == curves.end() ? JobCurves{} : found->second;
    nlohmann::json last_eval = nullptr;
    if (!curve.eval_loss.empty()) last_eval = JsonNumber(curve.eval_loss.back().second);
    nlohmann::json entry = JobJson(row);
    entry["loss_curve"] = Points(curve.loss);
    entry["eval_loss_curve"] = Points(curve.eval_loss);
    entry["eval_loss"] = last_eval;
    list.push_back(std::move(entry));
  }
  return {{"jobs", std::move(list)}};
}

nlohmann::json MetricsJson(const std::vector<v1::StepMetrics>& rows) {
  nlohmann::json table = nlohmann::json::array();
  for (const auto& m : rows) {
    nlohmann::json eval = nullptr, accuracy = nullptr;
    if (m.has_eval_loss()) eval = JsonNumber(m.eval_loss());
    if (m.has_eval_accuracy()) accuracy = JsonNumber(m.eval_accuracy());
    table.push_back({m.rank(), m.attempt(), m.step(), JsonNumber(m.loss()), m.lr(), m.grad_norm(),
                     m.tokens_per_s(), m.vram_allocated_bytes(), m.vram_reserved_bytes(),
                     m.vram_peak_bytes(), m.wall_time_s(), eval, accuracy});
  }
  return {{"columns",
           {"rank", "attempt", "step", "loss", "lr", "grad_norm", "tokens_per_s",
            "vram_allocated_bytes", "vram_reserved_bytes", "vram_peak_bytes", "wall_time_s",
            "eval_loss", "eval_accuracy"}},
          {"rows", std::move(table)}};
}

std::string EventKind(const v1::LogLine& line) {
  const std::string& m = line.message();
  const std::string lower = Lower(m);
  // Out-of-memory first: a retry after an OOM is an "oom" event, whatever logged it.
  if (Contains(lower, "out of memory") || Contains(m, "OOM")) return "oom";
  if (line.source() != "coordinator") return "";
  if (m.rfind("checkpoint at step", 0) == 0) return "checkpoint";
  if (Contains(m, "retrying as attempt") || Contains(m, "requeued")) return "restart";
  if (m.rfind("eval at step", 0) == 0) return "eval";
  for (const char* prefix :
       {"submitted", "attempt ", "trainer started", "completed", "failed", "cancel"}) {
    if (m.rfind(prefix, 0) == 0) return "state";
  }
  return "";
}

nlohmann::json LogLineJson(const v1::LogLine& line) {
  return {{"seq", line.seq()},       {"unix_ms", line.unix_ms()}, {"level", line.level()},
          {"source", line.source()}, {"rank", line.rank()},       {"message", line.message()},
          {"kind", EventKind(line)}};
}

nlohmann::json WorkersJson(const std::vector<WorkerView>& workers) {
  nlohmann::json list = nlohmann::json::array();
  for (const WorkerView& w : workers) {
    nlohmann::json devices = nlohmann::json::array();
    for (const auto& d : w.devices) {
      nlohmann::json device = {{"kind", d.kind()},
                               {"index", d.index()},
                               {"name", d.name()},
                               {"total_memory_bytes", d.total_memory_bytes()}};
      if (d.has_free_memory_bytes()) device["free_memory_bytes"] = d.free_memory_bytes();
      devices.push_back(std::move(device));
    }
    nlohmann::json running = nlohmann::json::array();
    for (const auto& r : w.running) {
      running.push_back({{"job_id", r.job_id}, {"attempt", r.attempt}, {"rank", r.rank}});
    }
    list.push_back({{"id", w.id},
                    {"name", w.name},
                    {"hostname", w.hostname},
                    {"devices", std::move(devices)},
                    {"running", std::move(running)},
                    {"heartbeat_age_ms", w.heartbeat_age_ms}});
  }
  return {{"workers", std::move(list)}};
}

std::string ScriptSafeJson(const nlohmann::json& value) {
  std::string text = value.dump();
  std::string safe;
  safe.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    // Inside a JSON string "<\/" still reads as "</"; outside strings JSON has no '<'.
    if (text[i] == '<' && i + 1 < text.size() && text[i + 1] == '/') {
      safe += "<\\/";
      ++i;
      continue;
    }
    safe += text[i];
  }
  return safe;
}

}  // namespace qlorad::server
