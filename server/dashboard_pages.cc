#include "server/dashboard_pages.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <map>

#include "server/store.h"

namespace qlorad::server {
namespace {

std::string E(std::string_view text) {
  return HtmlEscape(text);
}

// The frame of every page; `page` names the script that runs it (server/dashboard/PAGE.js).
std::string Layout(const std::string& title, const std::string& page, const std::string& main) {
  return fmt::format(
      R"(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{0} · qlorad</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body data-page="{1}">
<header class="top">
<a class="brand" href="/">qlorad</a>
<nav><a href="/"{2}>Jobs</a><a href="/workers"{3}>Workers</a></nav>
<span id="live" class="live" title="live updates">static page</span>
</header>
<main>
{4}
</main>
{5}</body>
</html>
)",
      E(title), page, page == "jobs" ? R"( class="here")" : "",
      page == "workers" ? R"( class="here")" : "", main,
      page == "error" || page == "login"
          ? ""
          : fmt::format("<script src=\"/static/common.js\"></script>\n"
                        "<script src=\"/static/chart.js\"></script>\n"
                        "<script src=\"/static/{}.js\"></script>\n",
                        page));
}

std::string StateBadge(v1::JobState state) {
  const std::string name = JobStateName(state);
  return fmt::format(R"(<span class="state state-{0}">{0}</span>)", name);
}

std::string Progress(const v1::Job& job) {
  const int64_t total = std::max<int64_t>(job.total_steps(), 1);
  return fmt::format(
      R"(<progress max="{}" value="{}"></progress> <span class="step">{} / {}</span>)", total,
      std::clamp<int64_t>(job.last_step(), 0, total), job.last_step(), job.total_steps());
}

std::string Loss(const v1::Job& job) {
  return job.last_step() > 0 ? FormatLoss(job.last_loss()) : "";
}

std::string Eta(const JobRow& row) {
  if (row.eta_s) return FormatDuration(*row.eta_s);
  return row.job.state() == v1::JOB_STATE_RUNNING ? "…" : "";
}

std::string FirstLine(const std::string& text) {
  return text.substr(0, text.find('\n'));
}

std::string JobLink(const std::string& job_id) {
  return fmt::format(R"(<a href="/jobs/{0}">{0}</a>)", E(job_id));
}

// A device's memory: "80.0 GiB", or "71.3 GiB free of 80.0 GiB" where its worker measured what
// is free (a GPU, while idle: what a job placed there would find).
std::string Memory(const v1::DeviceInfo& d) {
  if (d.total_memory_bytes() <= 0) return "";
  if (!d.has_free_memory_bytes()) return FormatBytes(d.total_memory_bytes());
  return FormatBytes(d.free_memory_bytes()) + " free of " + FormatBytes(d.total_memory_bytes());
}

std::string Devices(const WorkerView& w, bool memory) {
  std::string out;
  for (const auto& d : w.devices) {
    if (!out.empty()) out += "<br>";
    out += E(memory ? Memory(d) : fmt::format("{}:{} {}", d.kind(), d.index(), d.name()));
  }
  return out;
}

std::string AgeText(int64_t age_ms) {
  if (age_ms < 60000) return fmt::format("{:.1f} s ago", static_cast<double>(age_ms) / 1000.0);
  return FormatDuration(static_cast<double>(age_ms) / 1000.0) + " ago";
}

// The latest step of each rank, for the job page's rank table.
std::string RankRowsHtml(const std::vector<v1::StepMetrics>& metrics) {
  std::map<int, const v1::StepMetrics*> last;
  for (const auto& m : metrics) last[m.rank()] = &m;
  std::string rows;
  for (const auto& [rank, m] : last) {
    rows += fmt::format(
        R"(<tr data-rank="{0}"><td>{0}</td><td class="r-step">{1}</td><td class="r-loss">{2}</td><td class="r-tps">{3:.0f}</td><td class="r-alloc">{4}</td><td class="r-peak">{5}</td><td class="r-reserved">{6}</td></tr>)"
        "\n",
        rank, m->step(), FormatLoss(m->loss()), m->tokens_per_s(),
        E(FormatBytes(m->vram_allocated_bytes())), E(FormatBytes(m->vram_peak_bytes())),
        E(FormatBytes(m->vram_reserved_bytes())));
  }
  return rows;
}

std::string ClockTime(int64_t unix_ms) {
  // "23:08:41": the time of day in UTC, as the scripts show it too.
  const std::string full = FormatUtcTime(unix_ms);
  return full.size() >= 19 ? full.substr(11, 8) : full;
}

const char* const kCharts[][2] = {
    {"loss", "Loss"},
    {"lr", "Learning rate"},
    {"grad_norm", "Gradient norm"},
    {"tokens", "Tokens/s per rank"},
    {"vram", "VRAM per rank"},
};

// A chart's figure; job.js draws into its svg. `caption_html` follows the title.
std::string ChartFigure(const char* id, const char* title, const char* caption_html, bool hidden) {
  return fmt::format(R"(<figure class="chart" id="chart-{0}"{3}><figcaption>{1}{2}</figcaption>)"
                     R"(<svg viewBox="0 0 480 260" role="img" aria-label="{1}"></svg></figure>)"
                     "\n",
                     id, title, caption_html, hidden ? " hidden" : "");
}

}  // namespace

std::string HtmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string FormatLoss(double loss) {
  // As qloractl and the pages' script show a diverged loss.
  if (std::isnan(loss)) return "nan";
  if (std::isinf(loss)) return loss > 0 ? "inf" : "-inf";
  return fmt::format("{:.4f}", loss);
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = total / 3600, m = total / 60 % 60, s = total % 60;
  if (h > 0) return fmt::format("{}:{:02}:{:02}", h, m, s);
  return fmt::format("{}:{:02}", m, s);
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024.0;
  int unit = 0;
  while (value >= 1024.0 && unit < 3) {
    value /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.2f} {}", value, units[unit]);
}

std::string FormatUtcTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "";
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string EventItemHtml(const v1::LogLine& line) {
  return fmt::format(
      R"(<li class="ev ev-{0}"><time>{1}</time> <span class="kind">{0}</span> {2}</li>)"
      "\n",
      EventKind(line), ClockTime(line.unix_ms()), E(line.message()));
}

std::string LogLineHtml(const v1::LogLine& line) {
  return fmt::format(
      R"(<div class="line lvl-{0}"><time>{1}</time> <span class="src">{2}/{3}</span> {4}</div>)",
      E(line.level()), ClockTime(line.unix_ms()), E(line.source()), line.rank(), E(line.message()));
}

std::string JobRowHtml(const JobRow& row) {
  const v1::Job& job = row.job;
  const std::string state = JobStateName(job.state());
  std::string error;
  if (!job.error().empty()) {
    error = fmt::format(R"(<div class="error">{}</div>)", E(FirstLine(job.error())));
  }
  return fmt::format(
      R"(<tr id="job-row-{0}" data-job="{0}" data-state="{1}">)"
      R"(<td class="c-id">{2}</td><td class="c-name">{3}</td><td class="c-state">{4}{5}</td>)"
      R"(<td class="c-progress">{6}</td><td class="c-loss">{7}</td><td class="c-eta">{8}</td>)"
      R"(<td class="c-attempt">{9}</td><td class="c-worker">{10}</td>)"
      R"(<td class="c-created">{11}</td></tr>)",
      E(job.id()), state, JobLink(job.id()), E(job.name()), StateBadge(job.state()), error,
      Progress(job), Loss(job), Eta(row), job.attempt(), E(job.worker_id()),
      FormatUtcTime(job.created_unix_ms()));
}

std::string JobsPageHtml(const std::vector<JobRow>& jobs) {
  std::string rows;
  for (const JobRow& row : jobs) rows += JobRowHtml(row) + "\n";
  if (jobs.empty()) {
    rows = R"(<tr class="empty"><td colspan="9">No jobs yet: submit one with )"
           R"(<code>qloractl submit JOB.yaml</code>.</td></tr>)";
  }
  const std::string main = fmt::format(
      R"(<h1>Jobs</h1>
<table id="jobs" class="grid">
<thead><tr><th>job</th><th>name</th><th>state</th><th>progress</th><th>loss</th><th>ETA</th>)"
      R"(<th>attempt</th><th>worker</th><th>submitted</th></tr></thead>
<tbody>
{}
</tbody>
</table>
<p class="note">The newest {} jobs. Open one for its charts, log and events.</p>)",
      rows, DashboardData::kJobsShown);
  return Layout("Jobs", "jobs", main);
}

std::string JobSummaryHtml(const JobRow& row) {
  const v1::Job& job = row.job;
  std::string items;
  auto item = [&](const char* key, const std::string& cls, const std::string& value_html) {
    items += fmt::format(R"(<div><dt>{}</dt><dd class="{}">{}</dd></div>)", key, cls, value_html);
  };
  item("state", "s-state", StateBadge(job.state()));
  item("progress", "s-progress", Progress(job));
  item("loss", "s-loss", E(Loss(job)));
  item("ETA", "s-eta", E(Eta(row)));
  item("attempt", "s-attempt",
       fmt::format("{} ({} of {} restarts used)", job.attempt(), job.restarts(),
                   job.max_restarts()));
  item("worker", "s-worker", E(job.worker_id()));
  item("GPUs", "s-gpus", std::to_string(job.gpus()));
  item("priority", "s-priority", std::to_string(job.priority()));
  item("submitted", "s-created", E(FormatUtcTime(job.created_unix_ms())));
  item("started", "s-started", E(FormatUtcTime(job.started_unix_ms())));
  item("finished", "s-finished", E(FormatUtcTime(job.finished_unix_ms())));
  if (job.has_best()) {
    item("best eval", "s-best",
         E(fmt::format("{} at step {} ({})", FormatLoss(job.best().eval_loss()), job.best().step(),
                       job.best().adapter_path())));
  }
  if (!job.adapter_path().empty()) item("adapter", "s-adapter", E(job.adapter_path()));
  std::string error;
  if (!job.error().empty()) error = fmt::format(R"(<pre class="error">{}</pre>)", E(job.error()));
  return fmt::format(R"(<dl class="summary" data-state="{}">{}</dl>{})", JobStateName(job.state()),
                     items, error);
}

std::string JobPageHtml(const JobDetail& detail, const std::string& csrf) {
  const v1::Job& job = detail.row.job;
  std::string charts;
  for (const auto& [id, title] : kCharts) charts += ChartFigure(id, title, "", false);
  // Only classification jobs evaluate an accuracy: until one arrives the figure stays hidden,
  // and job.js shows it with the latest value.
  const bool has_accuracy =
      std::any_of(detail.metrics.begin(), detail.metrics.end(),
                  [](const v1::StepMetrics& m) { return m.has_eval_accuracy(); });
  charts +=
      ChartFigure("accuracy", "Eval accuracy", R"( <span class="latest"></span>)", !has_accuracy);
  std::string events, log;
  for (const auto& line : detail.events) events += EventItemHtml(line);
  for (const auto& line : detail.log_tail) log += LogLineHtml(line) + "\n";
  const nlohmann::json initial = {{"job_id", job.id()},
                                  {"terminal", IsTerminal(job.state())},
                                  {"cursor", FormatStreamCursor(detail.cursor)},
                                  {"metrics", MetricsJson(detail.metrics)}};
  const std::string main = fmt::format(
      R"(<h1>{0} <span class="job-id">{1}</span></h1>
<div class="actions"><button id="cancel" type="button" data-job="{1}" data-csrf="{11}"{2}>Cancel job</button>)"
      R"( <span id="cancel-status" role="status"></span></div>
<section id="summary">{3}</section>
<section class="charts">
{4}</section>
<section><h2>Ranks <small>(latest step of each)</small></h2>
<table id="ranks" class="grid"><thead><tr><th>rank</th><th>step</th><th>loss</th><th>tokens/s</th>)"
      R"(<th>VRAM allocated</th><th>VRAM peak</th><th>VRAM reserved</th></tr></thead>
<tbody>{5}</tbody></table></section>
<section><h2>Events <small>(restarts, OOM, checkpoints, evaluations)</small></h2>
<ol id="events" class="events">{6}</ol></section>
<section><h2>Log <small>(the last {7} lines, then live)</small></h2>
<div id="log" class="log">{8}</div></section>
<section><h2>Spec</h2><pre id="spec" class="spec">{9}</pre></section>
<script type="application/json" id="initial">{10}</script>)",
      E(job.name()), E(job.id()), IsTerminal(job.state()) ? " disabled" : "",
      JobSummaryHtml(detail.row), charts, RankRowsHtml(detail.metrics), events,
      DashboardData::kLogTail, log, E(job.spec_yaml()), ScriptSafeJson(initial), E(csrf));
  return Layout(job.name() + " " + job.id(), "job", main);
}

std::string WorkerRowsHtml(const std::vector<WorkerView>& workers) {
  std::string rows;
  for (const WorkerView& w : workers) {
    std::string jobs;
    for (const auto& r : w.running) {
      if (!jobs.empty()) jobs += "<br>";
      jobs += JobLink(r.job_id);
      jobs += r.rank >= 0 ? fmt::format(" rank {}", r.rank) : " (being stopped)";
    }
    rows += fmt::format(
        R"(<tr data-worker="{0}"><td class="w-name">{1}</td><td class="w-id">{0}</td>)"
        R"(<td class="w-host">{2}</td><td class="w-device">{3}</td><td class="w-memory">{4}</td>)"
        R"(<td class="w-job">{5}</td><td class="w-heartbeat">{6}</td></tr>)"
        "\n",
        E(w.id), E(w.name), E(w.hostname), Devices(w, false), Devices(w, true),
        jobs.empty() ? "idle" : jobs, AgeText(w.heartbeat_age_ms));
  }
  if (workers.empty()) {
    rows = R"(<tr class="empty"><td colspan="7">No worker is registered: start one with )"
           R"(<code>qlorad-worker --coordinator HOST:PORT</code>.</td></tr>)";
  }
  return rows;
}

std::string WorkersPageHtml(const std::vector<WorkerView>& workers) {
  const std::string main = fmt::format(
      R"(<h1>Workers</h1>
<table id="workers" class="grid">
<thead><tr><th>name</th><th>id</th><th>host</th><th>device</th><th>memory</th><th>current job</th>)"
      R"(<th>last heartbeat</th></tr></thead>
<tbody>
{}</tbody>
</table>)",
      WorkerRowsHtml(workers));
  return Layout("Workers", "workers", main);
}

std::string LoginPageHtml(const std::string& error, const std::string& csrf) {
  return Layout(
      "Sign in", "login",
      fmt::format(R"(<h1>Sign in</h1>{}
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{}">
<label>Token <input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>
<p>A user token from <code>qlorad token create --user NAME</code>; the browser keeps it in a
cookie for this server only.</p>)",
                  error.empty() ? "" : "<p class=\"error\">" + E(error) + "</p>", E(csrf)));
}

std::string ErrorPageHtml(int http_status, const std::string& message) {
  return Layout(std::to_string(http_status), "error",
                fmt::format(R"(<h1>{}</h1><p class="error">{}</p><p><a href="/">All jobs</a></p>)",
                            http_status, E(message)));
}

}  // namespace qlorad::server
