"""task: classification through the service: qloractl → qlorad → qlorad-worker → qlorad-train,
real processes on loopback, on the tiny model with labelled text. The evaluated steps' accuracy
(next to the eval loss) reaches `qloractl watch` (--json and text), `qloractl logs`, the Python
client's metrics and Prometheus /metrics, and the job's adapter is a PEFT SEQ_CLS adapter with
its labels. Bad labels fail the job naming the file:line and the field."""
import json
import math
from pathlib import Path

from conftest import http_get, python_client

qlorad = python_client()

WORDS = {"good": ["great", "fine", "lovely", "nice"], "bad": ["awful", "poor", "grim", "sad"]}


def write_data(path: Path, count: int = 16) -> Path:
    rows = []
    for i in range(count):
        label = "good" if i % 2 == 0 else "bad"
        word = WORDS[label][(i // 2) % 4]
        rows.append({"text": f"the day was {word} and the food {word} too", "sentiment": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_spec(path: Path, model: Path, data: Path, out: Path) -> Path:
    path.write_text(f"""name: {path.stem}
task: classification
model: {{path: {model}}}
lora: {{r: 4, alpha: 8}}
data: {{path: {data}, format: text, label_field: sentiment, max_seq_len: 32, validation: 0.25}}
train: {{max_steps: 6, micro_batch_size: 2, lr: 5.0e-3, warmup_steps: 1, precision: fp32,
        eval_steps: 3}}
scheduling: {{max_restarts: 0}}
checkpoint: {{every_steps: 0, output_dir: {out}}}
""")
    return path


def test_accuracy_reaches_every_client(cluster, tiny_model, tmp_path):
    spec = write_spec(tmp_path / "clsjob.yaml", tiny_model, write_data(tmp_path / "data.jsonl"),
                      tmp_path / "out")
    job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
    watch = cluster.ctl("--json", "watch", job_id, timeout=300)
    assert watch.returncode == 0, watch.stderr + watch.stdout + cluster.logs()
    steps = [json.loads(l) for l in watch.stdout.splitlines() if l.startswith("{")]
    steps = [m for m in steps if "step" in m and "loss" in m]
    accuracy = {m["step"]: m["eval_accuracy"] for m in steps if m["eval_accuracy"] is not None}
    assert sorted(accuracy) == [3, 6], steps
    assert all((m["eval_accuracy"] is None) == (m["eval_loss"] is None) for m in steps)
    # 4 validation examples (a quarter of 16): the accuracy counts whole examples.
    for value in accuracy.values():
        assert 0 <= value <= 1 and math.isclose(value * 4, round(value * 4)), accuracy
    assert cluster.job(job_id)["state"] == "COMPLETED", cluster.logs()

    lines = cluster.ctl("watch", job_id, check=True).stdout.splitlines()
    [step6] = [l for l in lines if l.startswith("step 6/6")]
    assert f"eval_acc {accuracy[6]:.4f}" in step6, lines
    logs = cluster.ctl("logs", job_id, check=True).stdout
    assert "classification: 2 labels of 'sentiment' in class order [bad, good]" in logs, logs
    assert f"accuracy {accuracy[6]:.4f}" in logs, logs
    with qlorad.Client(cluster.addr) as client:
        metrics = [m for m in client.metrics(job_id) if m.rank == 0]
        assert {m.step: m.eval_accuracy for m in metrics if m.eval_accuracy is not None} == accuracy
    prometheus = http_get(cluster.http_addr, "/metrics")
    [line] = [l for l in prometheus.splitlines()
              if l.startswith("qlorad_job_eval_accuracy{") and job_id in l]
    assert math.isclose(float(line.split()[-1]), accuracy[6], rel_tol=1e-9), line

    adapter = Path(cluster.job(job_id)["adapter_path"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["task_type"], config["modules_to_save"]) == ("SEQ_CLS", ["score"])
    labels = json.loads((adapter / "labels.json").read_text())
    assert labels["id2label"] == {"0": "bad", "1": "good"}


def test_a_label_outside_the_set_fails_naming_file_line_and_field(cluster, tiny_model, tmp_path):
    data = write_data(tmp_path / "data.jsonl")
    rows = data.read_text().splitlines()
    rows[6] = json.dumps({"text": "meh", "sentiment": "meh"})
    data.write_text("\n".join(rows) + "\n")
    spec = write_spec(tmp_path / "badlabel.yaml", tiny_model, data, tmp_path / "out")
    spec.write_text(spec.read_text().replace("label_field: sentiment,",
                                             "label_field: sentiment, labels: [bad, good],"))
    job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
    cluster.ctl("--json", "watch", job_id, timeout=300)
    job = cluster.job(job_id)
    assert job["state"] == "FAILED", job
    assert f"{data}:7: sentiment: 'meh' is not one of the labels [bad, good]" in job["error"], job


def test_classification_settings_are_checked_at_submit(cluster, tiny_model, tmp_path):
    spec = write_spec(tmp_path / "nolabel.yaml", tiny_model, tmp_path / "data.jsonl",
                      tmp_path / "out")
    spec.write_text(spec.read_text().replace("label_field: sentiment, ", ""))
    res = cluster.ctl("submit", spec)
    assert res.returncode != 0
    assert "data.label_field: is required with task: classification" in res.stderr, res.stderr
