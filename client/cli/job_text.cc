#include "client/cli/job_text.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <vector>

#include "client/cli/text_table.h"
#include "client/cli/units.h"

namespace qlorad::cli {
namespace {

constexpr std::string_view kStatePrefix = "JOB_STATE_";
constexpr size_t kDetailsKeyWidth = 10;

std::string StepOfTotal(const qlorad::v1::Job& job) {
  if (job.total_steps() <= 0) return fmt::format("{}/?", job.last_step());
  return fmt::format("{}/{}", job.last_step(), job.total_steps());
}

// No loss exists before the first step; 0.0000 would look like a real value.
std::string Loss(const qlorad::v1::Job& job) {
  return job.last_step() > 0 ? fmt::format("{:.4f}", job.last_loss()) : "-";
}

std::string OrDash(const std::string& s) {
  return s.empty() ? "-" : s;
}

// "eval loss 1.2345 at step 40: /runs/x/best/step-40/adapter".
std::string BestText(const qlorad::v1::Job& job) {
  return fmt::format("eval loss {:.4f} at step {}: {}", job.best().eval_loss(), job.best().step(),
                     job.best().adapter_path());
}

}  // namespace

std::string JobStateName(qlorad::v1::JobState state) {
  std::string name = qlorad::v1::JobState_Name(state);
  if (name.starts_with(kStatePrefix)) name.erase(0, kStatePrefix.size());
  return name.empty() ? fmt::format("STATE_{}", static_cast<int>(state)) : name;
}

std::optional<qlorad::v1::JobState> ParseJobState(const std::string& name) {
  std::string upper(kStatePrefix);
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  qlorad::v1::JobState state;
  if (!qlorad::v1::JobState_Parse(upper, &state) || state == qlorad::v1::JOB_STATE_UNSPECIFIED) {
    return std::nullopt;
  }
  return state;
}

bool IsTerminal(qlorad::v1::JobState state) {
  return state == qlorad::v1::JOB_STATE_COMPLETED || state == qlorad::v1::JOB_STATE_FAILED ||
         state == qlorad::v1::JOB_STATE_CANCELLED;
}

std::string FormatJobTable(const std::vector<qlorad::v1::Job>& jobs, int64_t now_unix_ms) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "NAME", "STATE", "STEP/TOTAL", "LOSS", "WORKER", "AGE"}};
  for (const auto& job : jobs) {
    rows.push_back({job.id(), job.name(), JobStateName(job.state()), StepOfTotal(job), Loss(job),
                    OrDash(job.worker_id()), FormatAge(job.created_unix_ms(), now_unix_ms)});
  }
  return FormatTable(rows);
}

std::string QueuedText(const qlorad::v1::Job& job) {
  if (job.queue_position() <= 0) return "queued, waiting for a worker";
  return fmt::format("queued, position {} of {}", job.queue_position(), job.queue_length());
}

std::string FormatJobDetails(const qlorad::v1::Job& job, int64_t now_unix_ms) {
  std::string created = FormatTimestamp(job.created_unix_ms());
  if (job.created_unix_ms() > 0) {
    created += fmt::format(" ({} ago)", FormatAge(job.created_unix_ms(), now_unix_ms));
  }
  std::vector<std::pair<const char*, std::string>> fields = {{
      {"id", job.id()},
      {"name", job.name()},
      {"state", JobStateName(job.state())},
      {"step", StepOfTotal(job)},
      {"loss", Loss(job)},
      // Attempts also follow lost workers; restarts count trainer failures only.
      {"attempt", fmt::format("{} ({} of {} restarts used)", job.attempt(), job.restarts(),
                              job.max_restarts())},
      {"priority", std::to_string(job.priority())},
      {"gpus", std::to_string(job.gpus())},
      {"owner", OrDash(job.owner())},
      {"worker", OrDash(job.worker_id())},
      {"created", created},
      {"started", FormatTimestamp(job.started_unix_ms())},
      {"finished", FormatTimestamp(job.finished_unix_ms())},
      {"adapter", OrDash(job.adapter_path())},
      {"error", OrDash(job.error())},
  }};
  // Only a retry (qloractl retry) names its original: no row for the others.
  if (!job.retry_of().empty()) {
    const auto owner = std::find_if(fields.begin(), fields.end(), [](const auto& field) {
      return std::string_view(field.first) == "owner";
    });
    fields.insert(owner + 1, {"retry of", job.retry_of()});
  }
  // Only jobs that evaluate (data.validation) have a best evaluation: no row for the others.
  if (job.has_best()) fields.insert(fields.end() - 1, {"best", BestText(job)});
  if (job.queue_position() > 0)
    fields.insert(
        fields.begin() + 3,
        {"queue", fmt::format("position {} of {}", job.queue_position(), job.queue_length())});
  // A queued job the scheduler cannot place says why (e.g. no worker has the GPU memory).
  if (!job.waiting_reason().empty())
    fields.insert(fields.begin() + 3, {"waiting", job.waiting_reason()});
  std::string out;
  for (const auto& [key, value] : fields) {
    // Errors can span lines (the server appends the trainer's stderr); keep them in the column.
    std::string indented = value;
    for (size_t at = indented.find('\n'); at != std::string::npos;
         at = indented.find('\n', at + 1)) {
      indented.insert(at + 1, std::string(kDetailsKeyWidth, ' '));
    }
    out += fmt::format("{:<{}}{}\n", key, kDetailsKeyWidth, indented);
  }
  return out;
}

std::string FormatFinalState(const qlorad::v1::Job& job) {
  std::string out = fmt::format("job {} {}", job.id(), JobStateName(job.state()));
  if (job.last_step() > 0) {
    out += fmt::format(" at step {} (loss {:.4f})", StepOfTotal(job), job.last_loss());
  }
  out += "\n";
  if (job.state() == qlorad::v1::JOB_STATE_COMPLETED && !job.adapter_path().empty()) {
    out += fmt::format("adapter written to {}{}\n", job.adapter_path(),
                       job.stopped_early() ? " (stopped early: train.early_stopping)" : "");
  }
  if (job.state() == qlorad::v1::JOB_STATE_COMPLETED && job.has_best()) {
    out += fmt::format("best adapter (eval loss {:.4f} at step {}) in {}\n", job.best().eval_loss(),
                       job.best().step(), job.best().adapter_path());
  }
  if (job.state() == qlorad::v1::JOB_STATE_FAILED) {
    out += fmt::format("error: {}\n", job.error().empty() ? "(no error reported)" : job.error());
  }
  return out;
}

std::string FormatLogLine(const qlorad::v1::LogLine& line) {
  return fmt::format("{}  {:<7}  {}[{}]  {}", FormatTimestampMillis(line.unix_ms()), line.level(),
                     line.source(), line.rank(), line.message());
}

}  // namespace qlorad::cli
