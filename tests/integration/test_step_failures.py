"""Steps that go wrong, through the service: qloractl → qlorad → qlorad-worker → qlorad-train,
real processes on loopback.

- A diverged step (a NaN loss, reported just before the trainer fails the job): the coordinator
  stores it as NaN (SQLite would make it NULL, which its NOT NULL loss column refuses), so the job
  fails with the trainer's message, and every client shows the loss as nan: `qloractl status` and
  `watch`, their --json ("NaN", protobuf's JSON spelling), the Python client, the dashboard's
  /api/jobs and Prometheus /metrics.
- A step that runs out of memory (injected with the trainer's test hook QLORAD_INJECT_OOM_ROWS,
  which the worker passes on) is retried with the micro-batch halved: the job completes, and the
  user reads why in `qloractl logs`."""
import json
import math
import re
from pathlib import Path

from conftest import REPO, Cluster, http_get, python_client

qlorad = python_client()

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"


def write_job(path: Path, model: Path, out: Path, train: str) -> Path:
    path.write_text(f"""name: {path.stem}
model: {{path: {model}}}
lora: {{r: 4, alpha: 8}}
data: {{path: {DEMO_DATA}, format: text, max_seq_len: 64}}
train: {{{train}, warmup_steps: 0, scheduler: constant, precision: fp32}}
scheduling: {{max_restarts: 0}}
checkpoint: {{every_steps: 0, output_dir: {out}}}
""")
    return path


def test_a_diverged_step_is_stored_as_nan_and_fails_the_job(cluster, tiny_model, tmp_path):
    # A learning rate this large sends the adapters to infinity within a few steps.
    spec = write_job(tmp_path / "diverges.yaml", tiny_model, tmp_path / "out",
                     "max_steps: 20, micro_batch_size: 2, lr: 1.0e+30, max_grad_norm: null")
    job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
    job = cluster.wait_state(job_id, {"FAILED", "COMPLETED"})
    assert job["state"] == "FAILED", cluster.logs()
    assert "training diverged: loss is nan" in job["error"], job["error"]
    last = job["last_step"]
    assert last >= 2 and job["last_loss"] == "NaN", job

    watch = cluster.ctl("--json", "watch", job_id, "--from-step", last)
    steps = [json.loads(l) for l in watch.stdout.splitlines() if l.startswith("{")]
    steps = [m for m in steps if m.get("step") == last]
    assert steps and steps[0]["loss"] == "NaN", watch.stdout
    assert "(loss nan)" in cluster.ctl("watch", job_id).stdout
    status = cluster.ctl("status", job_id, check=True).stdout
    assert re.search(r"^loss +nan$", status, re.M), status

    with qlorad.Client(cluster.addr) as client:
        losses = {m.step: m.loss for m in client.metrics(job_id) if m.rank == 0}
        assert math.isnan(losses[last]) and all(math.isfinite(losses[s]) for s in range(1, last))
        assert math.isnan(client.get(job_id).last_loss)

    [entry] = [j for j in json.loads(http_get(cluster.http_addr, "/api/jobs"))["jobs"]
               if j["id"] == job_id]
    assert entry["loss"] == "NaN" and entry["loss_curve"][-1] == [last, "NaN"], entry
    prometheus = http_get(cluster.http_addr, "/metrics")
    [line] = [l for l in prometheus.splitlines() if l.startswith("qlorad_job_loss{") and job_id in l]
    assert line.endswith(" NaN"), line


def test_a_step_out_of_memory_is_retried_and_the_user_is_told(tmp_path, tiny_model, monkeypatch):
    c = Cluster(tmp_path)
    try:
        c.start_coordinator()
        monkeypatch.setenv("QLORAD_INJECT_OOM_ROWS", "1")  # the worker's trainers inherit it
        c.start_worker(tmp_path / "work")
        spec = write_job(tmp_path / "oom.yaml", tiny_model, tmp_path / "out",
                         "max_steps: 3, micro_batch_size: 4, lr: 2.0e-3")
        job_id = json.loads(c.ctl("--json", "submit", spec, check=True).stdout)["id"]
        job = c.wait_state(job_id, {"FAILED", "COMPLETED"})
        assert job["state"] == "COMPLETED", c.logs()
        logs = c.ctl("logs", job_id, check=True).stdout
        assert "step 1: out of memory with micro-batches of 4 row(s) of 64 tokens" in logs, logs
        assert "running it again as micro-batches of 2 row(s) with grad_accum 2" in logs, logs
        assert "running it again as micro-batches of 1 row(s) with grad_accum 4" in logs, logs
        warnings = [json.loads(l) for l in c.ctl("--json", "logs", job_id, check=True).stdout.splitlines()]
        assert sum("running it again" in w["message"] and w["level"] == "warning" for w in warnings) == 2
    finally:
        c.stop()
