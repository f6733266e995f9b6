#include "server/dashboard.h"

#include "common/json_number.h"
#include "server/store.h"

namespace qlorad::server {

const std::string& DashboardHtml() {
  static const std::string html = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>qlorad</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
  table { border-collapse: collapse; margin-bottom: 2em; }
  th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
  .state-RUNNING { color: #0a58ca; } .state-COMPLETED { color: #198754; }
  .state-FAILED { color: #dc3545; } .state-CANCELLED { color: #6c757d; }
  .chart { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
  .chart svg { border: 1px solid #ccc; background: #fafafa; }
  .error { color: #dc3545; white-space: pre-wrap; font-size: 0.85em; }
</style>
</head>
<body>
<h1>qlorad</h1>
<p id="status">loading&hellip;</p>
<table id="jobs"><thead><tr><th>job</th><th>name</th><th>state</th><th>attempt</th>
<th>step</th><th>loss</th><th>eval loss</th><th>best</th><th>worker</th></tr></thead><tbody></tbody></table>
<div id="charts"></div>
<script>
"use strict";
const W = 360, H = 180, PAD = 30;

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

// JSON has no NaN: a diverged loss comes as "NaN" (or "Infinity"), which Number() reads back.
// It is shown as qloractl shows it, and left out of the chart's scale and lines.
function lossText(value) {
  const x = Number(value);
  if (Number.isFinite(x)) return x.toFixed(4);
  return Number.isNaN(x) ? "nan" : (x > 0 ? "inf" : "-inf");
}
const finitePoints = points => points.map(p => [p[0], Number(p[1])]).filter(p => Number.isFinite(p[1]));

function lossChart(job) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  const pts = finitePoints(job.loss_curve), evals = finitePoints(job.eval_loss_curve);
  if (pts.length > 0) {
    // One scale for both curves, so the eval loss reads against the training loss.
    const all = pts.concat(evals);
    const steps = all.map(p => p[0]), losses = all.map(p => p[1]);
    const x0 = Math.min(...steps), x1 = Math.max(...steps, x0 + 1);
    const y0 = Math.min(...losses), y1 = Math.max(...losses, y0 + 1e-9);
    const sx = s => PAD + (s - x0) / (x1 - x0) * (W - 2 * PAD);
    const sy = l => H - PAD - (l - y0) / (y1 - y0) * (H - 2 * PAD);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#0a58ca");
    line.setAttribute("points", pts.map(p => sx(p[0]) + "," + sy(p[1])).join(" "));
    svg.appendChild(line);
    if (evals.length > 0) {
      const eval_line = document.createElementNS(ns, "polyline");
      eval_line.setAttribute("fill", "none"); eval_line.setAttribute("stroke", "#d9480f");
      eval_line.setAttribute("points", evals.map(p => sx(p[0]) + "," + sy(p[1])).join(" "));
      svg.appendChild(eval_line);
    }
    const labels = [[4, 14, y1.toFixed(3)], [4, H - PAD, y0.toFixed(3)],
                    [PAD, H - 8, "step " + x0], [W - PAD - 60, H - 8, "step " + x1]];
    for (const [x, y, t] of labels) {
      const el = document.createElementNS(ns, "text");
      el.setAttribute("x", x); el.setAttribute("y", y); el.setAttribute("font-size", "10");
      el.textContent = t;
      svg.appendChild(el);
    }
  }
  const box = document.createElement("div");
  box.className = "chart";
  box.appendChild(text("div", job.name + " (" + job.id + ")" +
                            (evals.length > 0 ? ": loss (blue), eval loss (orange)" : "")));
  box.appendChild(svg);
  return box;
}

async function refresh() {
  try {
    const res = await fetch("/api/jobs");
    const data = await res.json();
    const body = document.querySelector("#jobs tbody");
    body.replaceChildren();
    const charts = document.getElementById("charts");
    charts.replaceChildren();
    for (const job of data.jobs) {
      const row = document.createElement("tr");
      row.appendChild(text("td", job.id));
      row.appendChild(text("td", job.name));
      const state = text("td", job.state, "state-" + job.state);
      if (job.error) state.appendChild(text("div", job.error, "error"));
      row.appendChild(state);
      row.appendChild(text("td", job.attempt));
      row.appendChild(text("td", job.step + " / " + job.total_steps));
      row.appendChild(text("td", job.step > 0 ? lossText(job.loss) : ""));
      row.appendChild(text("td", job.eval_loss === null ? "" : lossText(job.eval_loss)));
      row.appendChild(text("td", job.best === null ? "" :
          lossText(job.best.eval_loss) + " at step " + job.best.step +
          (job.stopped_early ? " (stopped early)" : "")));
      row.appendChild(text("td", job.worker_id));
      body.appendChild(row);
      if (job.loss_curve.length > 0) charts.appendChild(lossChart(job));
    }
    document.getElementById("status").textContent =
        data.jobs.length + " job(s), updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("status").textContent = "cannot reach qlorad: " + e;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)html";
  return html;
}

LossCurve Downsample(const LossCurve& curve, size_t max_points) {
  if (curve.size() <= max_points || max_points < 2) return curve;
  LossCurve out;
  const double stride = static_cast<double>(curve.size() - 1) / static_cast<double>(max_points - 1);
  for (size_t i = 0; i < max_points; ++i) {
    out.push_back(curve[static_cast<size_t>(static_cast<double>(i) * stride + 0.5)]);
  }
  out.back() = curve.back();
  return out;
}

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

}  // namespace

nlohmann::json JobsJson(const std::vector<v1::Job>& jobs,
                        const std::map<std::string, JobCurves>& curves) {
  nlohmann::json list = nlohmann::json::array();
  for (const v1::Job& job : jobs) {
    auto found = curves.find(job.id());
    const JobCurves curve = found == curves.end() ? JobCurves{} : found->second;
    nlohmann::json last_eval = nullptr;
    if (!curve.eval_loss.empty()) last_eval = JsonNumber(curve.eval_loss.back().second);
    list.push_back({{"id", job.id()},
                    {"name", job.name()},
                    {"state", JobStateName(job.state())},
                    {"attempt", job.attempt()},
                    {"step", job.last_step()},
                    {"total_steps", job.total_steps()},
                    {"loss", JsonNumber(job.last_loss())},
                    {"error", job.error()},
                    {"worker_id", job.worker_id()},
                    {"created_unix_ms", job.created_unix_ms()},
                    {"finished_unix_ms", job.finished_unix_ms()},
                    {"adapter_path", job.adapter_path()},
                    {"loss_curve", Points(curve.loss)},
                    {"eval_loss_curve", Points(curve.eval_loss)},
                    {"eval_loss", last_eval},
                    {"best", BestJson(job)},
                    {"stopped_early", job.stopped_early()}});
  }
  return {{"jobs", std::move(list)}};
}

}  // namespace qlorad::server
