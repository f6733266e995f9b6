"""Evaluation during training through the service: qloractl → qlorad → qlorad-worker →
qlorad-train, real processes on loopback. The eval loss (and perplexity) of the evaluated steps
reaches `qloractl watch` (--json and text), `qloractl logs`, `qloractl status`, the Python
client's metrics stream and Job, the dashboard's /api/jobs and Prometheus /metrics; steps that
were not evaluated carry none. Keep-best is named in the job's result."""
import json
import math
from pathlib import Path

from conftest import REPO, http_get, python_client

qlorad = python_client()

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"


def write_eval_spec(path: Path, model: Path, out: Path) -> Path:
    path.write_text(f"""name: {path.stem}
model: {{path: {model}}}
lora: {{r: 4, alpha: 8}}
data: {{path: {DEMO_DATA}, format: text, max_seq_len: 64, validation: 0.2}}
train: {{max_steps: 6, micro_batch_size: 2, lr: 2.0e-3, warmup_steps: 1, precision: fp32,
        eval_steps: 3, eval_batches: 2}}
scheduling: {{max_restarts: 0}}
checkpoint: {{every_steps: 0, output_dir: {out}}}
""")
    return path


def test_eval_loss_reaches_every_client(cluster, tiny_model, tmp_path):
    spec = write_eval_spec(tmp_path / "evaljob.yaml", tiny_model, tmp_path / "out")
    submitted = cluster.ctl("--json", "submit", spec)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]

    watch = cluster.ctl("--json", "watch", job_id, timeout=300)
    assert watch.returncode == 0, watch.stderr + watch.stdout + cluster.logs()
    steps = [json.loads(l) for l in watch.stdout.splitlines() if l.startswith("{")]
    steps = [m for m in steps if "step" in m and "loss" in m]
    assert [m["step"] for m in steps] == list(range(1, 7)), watch.stdout
    evaluated = {m["step"]: m["eval_loss"] for m in steps if m["eval_loss"] is not None}
    assert sorted(evaluated) == [3, 6], steps
    for m in steps:
        if m["eval_loss"] is None:
            assert m["eval_perplexity"] is None
        else:
            assert m["eval_loss"] > 0
            assert math.isclose(m["eval_perplexity"], math.exp(m["eval_loss"]), rel_tol=1e-9)

    job = cluster.job(job_id)
    assert job["state"] == "COMPLETED", cluster.logs()
    best_step = min(evaluated, key=evaluated.get)
    assert job["best"]["step"] == best_step
    assert job["best"]["eval_loss"] == evaluated[best_step]
    assert Path(job["best"]["adapter_path"]).is_dir()
    assert job["stopped_early"] is False

    # Text forms (stdout is a pipe): plain lines at a bounded rate, evaluated steps always, with
    # their eval; steps not evaluated, where printed, without.
    lines = cluster.ctl("watch", job_id, check=True).stdout.splitlines()
    step3 = [l for l in lines if l.startswith("step 3/6")]
    assert step3 and f"eval_loss {evaluated[3]:.4f}" in step3[0], lines
    not_evaluated = [l for l in lines if l.startswith("step ") and "/6" in l
                     and int(l.split()[1].split("/")[0]) not in evaluated]
    assert all("eval_loss" not in l for l in not_evaluated), lines
    status = cluster.ctl("status", job_id, check=True).stdout
    assert f"eval loss {evaluated[best_step]:.4f} at step {best_step}" in status, status
    logs = cluster.ctl("logs", job_id, check=True).stdout
    assert f"eval at step 6: eval_loss {evaluated[6]:.4f}" in logs, logs

    # The Python client: the same values, None where a step was not evaluated.
    with qlorad.Client(cluster.addr) as client:
        metrics = [m for m in client.metrics(job_id) if m.rank == 0]
        assert {m.step: m.eval_loss for m in metrics if m.eval_loss is not None} == evaluated
        assert all(m.eval_perplexity is None for m in metrics if m.eval_loss is None)
        py_job = client.get(job_id)
        assert py_job.best.step == best_step and py_job.best.eval_loss == evaluated[best_step]
        assert py_job.stopped_early is False

    # The dashboard's data and Prometheus.
    dashboard = json.loads(http_get(cluster.http_addr, "/api/jobs"))
    [entry] = [j for j in dashboard["jobs"] if j["id"] == job_id]
    assert entry["eval_loss_curve"] == [[3, evaluated[3]], [6, evaluated[6]]]
    assert entry["eval_loss"] == evaluated[6]
    assert entry["best"]["step"] == best_step
    prometheus = http_get(cluster.http_addr, "/metrics")
    [line] = [l for l in prometheus.splitlines()
              if l.startswith("qlorad_job_eval_loss{") and job_id in l]
    assert math.isclose(float(line.split()[-1]), evaluated[6], rel_tol=1e-9), line
    assert any(l.startswith("qlorad_job_eval_perplexity{") and job_id in l
               for l in prometheus.splitlines())


def test_a_job_without_validation_reports_no_eval(cluster, tiny_model, tmp_path):
    from conftest import write_spec

    spec = write_spec(tmp_path / "plain.yaml", tiny_model, DEMO_DATA, tmp_path / "out", max_steps=2)
    job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
    watch = cluster.ctl("--json", "watch", job_id, timeout=300, check=True)
    steps = [json.loads(l) for l in watch.stdout.splitlines() if l.startswith("{")]
    assert steps and all(m.get("eval_loss", None) is None for m in steps if "step" in m)
    assert cluster.job(job_id)["best"] is None


def test_evaluation_settings_are_checked_at_submit(cluster, tiny_model, tmp_path):
    spec = write_eval_spec(tmp_path / "bad.yaml", tiny_model, tmp_path / "out")
    spec.write_text(spec.read_text().replace("validation: 0.2", "validation: 1.5"))
    res = cluster.ctl("submit", spec)
    assert res.returncode != 0
    assert "data.validation: a fraction of data.path must be in (0, 1), got 1.5" in res.stderr
