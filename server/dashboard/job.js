"use strict";
// The job page: charts of the job's step metrics (every rank), drawn from the data the page
// came with, then kept current by the job's event stream along with the summary, the rank
// table, the events and the log. The stream ends when the job does.
(() => {
  const initial = JSON.parse(document.getElementById("initial").textContent);
  const jobId = initial.job_id;
  const GiB = 1024 ** 3;

  // rank -> Map("attempt:step" -> row): a row sent twice (the page's data and the stream can
  // overlap by a step) counts once.
  const ranks = new Map();
  let columns = null;

  function addMetrics(table) {
    columns = columns || Object.fromEntries(table.columns.map((name, i) => [name, i]));
    for (const row of table.rows) {
      const rank = row[columns.rank];
      if (!ranks.has(rank)) ranks.set(rank, new Map());
      ranks.get(rank).set(`${row[columns.attempt]}:${row[columns.step]}`, row);
    }
    scheduleRender();
  }

  // A rank's rows in step order; where a retry repeated steps, the later attempt's.
  function rowsOf(rank) {
    const bySteps = new Map();
    for (const row of ranks.get(rank).values()) {
      const had = bySteps.get(row[columns.step]);
      if (!had || had[columns.attempt] <= row[columns.attempt]) bySteps.set(row[columns.step], row);
    }
    return [...bySteps.values()].sort((a, b) => a[columns.step] - b[columns.step]);
  }

  function line(rows, column, scale = 1) {
    return rows.map((r) => [r[columns.step], r[column] / scale]);
  }

  function chart(id, spec) {
    charts.draw(document.querySelector(`#chart-${id} svg`), spec);
  }

  function render() {
    if (!columns) return;
    const rankIds = [...ranks.keys()].sort((a, b) => a - b);
    const perRank = new Map(rankIds.map((r) => [r, rowsOf(r)]));
    const first = perRank.get(0) || perRank.get(rankIds[0]) || [];
    const evals = first.filter((r) => r[columns.eval_loss] !== null);
    chart("loss", {
      xTitle: "step", yTitle: "loss (nats/token)",
      series: [
        {label: "training (rank 0)", points: line(first, columns.loss)},
        {label: "eval", points: evals.map((r) => [r[columns.step], r[columns.eval_loss]]),
         markers: true},
      ],
    });
    renderAccuracy(evals);
    chart("lr", {xTitle: "step", yTitle: "learning rate",
                 series: [{label: "lr", points: line(first, columns.lr)}]});
    chart("grad_norm", {xTitle: "step", yTitle: "grad norm (L2, before clipping)",
                        series: [{label: "grad norm", points: line(first, columns.grad_norm)}]});
    chart("tokens", {
      xTitle: "step", yTitle: "tokens/s",
      series: rankIds.map((r) => ({label: `rank ${r}`, points: line(perRank.get(r),
                                                                      columns.tokens_per_s)})),
    });
    const vram = [];
    rankIds.forEach((r, i) => {
      const color = ["#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e67700", "#0c8599"][i % 6];
      vram.push({label: `rank ${r} allocated`, color,
                 points: line(perRank.get(r), columns.vram_allocated_bytes, GiB)});
      vram.push({label: `peak`, color, dashed: true,
                 points: line(perRank.get(r), columns.vram_peak_bytes, GiB)});
    });
    chart("vram", {xTitle: "step", yTitle: "VRAM (GiB)", series: vram});
    renderRanks(rankIds, perRank);
  }

  // Classification jobs' evaluations carry an accuracy: its chart and latest value appear with
  // the first one (other jobs never show the figure).
  function renderAccuracy(evals) {
    const scored = evals.filter((r) => r[columns.eval_accuracy] != null);
    if (!scored.length) return;
    const figure = document.getElementById("chart-accuracy");
    figure.hidden = false;
    figure.querySelector(".latest").textContent =
        scored[scored.length - 1][columns.eval_accuracy].toFixed(4);
    chart("accuracy", {
      xTitle: "step", yTitle: "accuracy (validation)",
      series: [{label: "eval accuracy", points: line(scored, columns.eval_accuracy),
                markers: true}],
    });
  }

  function renderRanks(rankIds, perRank) {
    const body = document.querySelector("#ranks tbody");
    for (const r of rankIds) {
      const rows = perRank.get(r);
      const last = rows[rows.length - 1];
      if (!last) continue;
      let tr = body.querySelector(`tr[data-rank="${r}"]`);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.rank = r;
        for (const cls of ["r-rank", "r-step", "r-loss", "r-tps", "r-alloc", "r-peak",
                           "r-reserved"]) {
          tr.appendChild(Object.assign(document.createElement("td"), {className: cls}));
        }
        tr.firstChild.textContent = r;
        body.appendChild(tr);
      }
      const set = (cls, text) => { tr.querySelector("." + cls).textContent = text; };
      set("r-step", last[columns.step]);
      set("r-loss", qlorad.fmtLoss(last[columns.loss]));
      set("r-tps", last[columns.tokens_per_s].toFixed(0));
      set("r-alloc", qlorad.fmtBytes(last[columns.vram_allocated_bytes]));
      set("r-peak", qlorad.fmtBytes(last[columns.vram_peak_bytes]));
      set("r-reserved", qlorad.fmtBytes(last[columns.vram_reserved_bytes]));
    }
  }

  let pending = false;
  function scheduleRender() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  }

  const MAX_LOG_LINES = 1000;
  function addLogs(event) {
    const log = document.getElementById("log");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(qlorad.fragment(event.log_html));
    while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
    if (event.events_html) document.getElementById("events").appendChild(
        qlorad.fragment(event.events_html));
  }

  const cancel = document.getElementById("cancel");
  const cancelStatus = document.getElementById("cancel-status");

  function updateJob(event) {
    document.getElementById("summary").innerHTML = event.summary_html;
    if (["COMPLETED", "FAILED", "CANCELLED"].includes(event.job.state)) cancel.disabled = true;
  }

  cancel.addEventListener("click", async () => {
    if (!window.confirm(`Cancel job ${jobId}?`)) return;
    cancel.disabled = true;
    cancelStatus.textContent = "cancelling…";
    try {
      // A JSON body: the server refuses a cancel without one, which a cross-site form cannot send;
      // and the page's CSRF token, which echoes this browser's qlorad_csrf cookie.
      const res = await fetch(`/api/jobs/${encodeURIComponent(jobId)}/cancel`, {
        method: "POST", body: "{}",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": cancel.dataset.csrf}});
      const body = await res.json();
      cancelStatus.textContent = res.ok ? `cancel requested (${body.state})` : body.error;
      if (!res.ok) cancel.disabled = false;
    } catch (e) {
      cancelStatus.textContent = `cannot reach qlorad: ${e}`;
      cancel.disabled = false;
    }
  });

  addMetrics(initial.metrics);
  render();
  if (initial.terminal) {
    qlorad.setLive("finished", "done");
    return;
  }
  const stream = qlorad.follow(
      (lastId) => `/api/jobs/${encodeURIComponent(jobId)}/stream?after=${
        encodeURIComponent(lastId || initial.cursor)}`,
      {
        metrics: addMetrics,
        logs: addLogs,
        job: updateJob,
        end: () => {
          stream.stop();
          qlorad.setLive("finished", "done");
        },
        error: (e) => {
          stream.stop();
          qlorad.setLive(`stream error: ${e.message}`, "off");
        },
      });
})();
