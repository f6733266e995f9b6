"""The first job end to end: qloractl → qlorad → qlorad-worker → qlorad-train, all real processes
on loopback, then the PEFT adapter on disk. And bad input: each gives a clear error naming the
field or file, the job is FAILED with the reason, and the coordinator keeps serving."""
import json
import struct
from pathlib import Path

from conftest import REPO, write_spec

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"


def read_safetensors_header(path: Path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return header


def submitted_id(res) -> str:
    assert res.returncode == 0, res.stderr + res.stdout
    return json.loads(res.stdout)["id"]


def test_demo_job_completes_and_writes_a_peft_adapter(cluster, tiny_model, tmp_path):
    spec = write_spec(tmp_path / "e2e.yaml", tiny_model, DEMO_DATA, tmp_path / "out", max_steps=8)
    job_id = submitted_id(cluster.ctl("--json", "submit", spec))

    # watch follows the job to its end; --json gives one object per step, in step order.
    watch = cluster.ctl("--json", "watch", job_id, timeout=300)
    assert watch.returncode == 0, watch.stderr + watch.stdout + cluster.logs()
    steps = [json.loads(l) for l in watch.stdout.splitlines() if l.startswith("{")]
    metrics = [m for m in steps if "loss" in m and "step" in m]
    assert [m["step"] for m in metrics] == list(range(1, 9)), watch.stdout
    assert all(m["loss"] > 0 for m in metrics)

    job = cluster.job(job_id)
    assert job["state"] == "COMPLETED", job
    adapter = Path(job["adapter_path"])
    assert adapter.is_absolute() and adapter.is_dir()

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["task_type"] == "CAUSAL_LM"
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

    model_config = json.loads((tiny_model / "config.json").read_text())
    hidden, inter = model_config["hidden_size"], model_config["intermediate_size"]
    head_dim = model_config.get("head_dim", hidden // model_config["num_attention_heads"])
    kv = model_config["num_key_value_heads"] * head_dim
    q = model_config["num_attention_heads"] * head_dim
    shapes = {"q_proj": (q, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden),
              "o_proj": (hidden, q), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
              "down_proj": (hidden, inter)}
    header = read_safetensors_header(adapter / "adapter_model.safetensors")
    expected = {}
    for layer in range(model_config["num_hidden_layers"]):
        for name, (out_f, in_f) in shapes.items():
            block = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = f"base_model.model.model.layers.{layer}.{block}.{name}"
            expected[f"{key}.lora_A.weight"] = [4, in_f]
            expected[f"{key}.lora_B.weight"] = [out_f, 4]
    assert {k: v["shape"] for k, v in header.items()} == expected


def test_bad_specs_are_rejected_naming_the_field(cluster, tiny_model, tmp_path):
    good = write_spec(tmp_path / "good.yaml", tiny_model, DEMO_DATA, tmp_path / "out")
    cases = {
        "malformed.yaml": ("name: x\nmodel: {path: [unclosed\n", "malformed YAML"),
        "unknown.yaml": (good.read_text() + "optimiser: {name: adamw}\n", "optimiser: unknown key"),
        "negative_lr.yaml": (good.read_text().replace("lr: 2.0e-3", "lr: -0.1"), "train.lr"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        res = cluster.ctl("submit", path)
        assert res.returncode == 1, (name, res.stdout, res.stderr)
        assert "INVALID_ARGUMENT" in res.stderr and expected in res.stderr, (name, res.stderr)
    res = cluster.ctl("submit", tmp_path / "no-such-file.yaml")
    assert res.returncode != 0 and "no-such-file.yaml" in res.stderr
    # Nothing was stored for the rejected specs, and the coordinator still answers.
    listed = cluster.ctl("--json", "jobs", check=True).stdout.splitlines()
    assert listed == [], listed


def test_missing_model_and_empty_dataset_fail_the_job_with_the_reason(cluster, tiny_model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    missing_model = write_spec(tmp_path / "missing-model.yaml", tmp_path / "no-model", DEMO_DATA,
                               tmp_path / "out1")
    empty_data = write_spec(tmp_path / "empty-data.yaml", tiny_model, empty, tmp_path / "out2")

    for spec, field in ((missing_model, "model.path"), (empty_data, "data.path")):
        job_id = submitted_id(cluster.ctl("--json", "submit", spec))
        job = cluster.wait_state(job_id, {"FAILED", "COMPLETED", "CANCELLED"})
        assert job["state"] == "FAILED", job
        assert field in job["error"], job
        assert job["attempt"] == 0, "bad input must not be retried"

    # The coordinator and the worker keep serving: a good job still completes.
    good = write_spec(tmp_path / "after.yaml", tiny_model, DEMO_DATA, tmp_path / "out3", max_steps=2)
    job_id = submitted_id(cluster.ctl("--json", "submit", good))
    assert cluster.wait_state(job_id, {"COMPLETED", "FAILED"})["state"] == "COMPLETED", cluster.logs()


def test_cancel_a_running_job(cluster, tiny_model, tmp_path):
    spec = write_spec(tmp_path / "long.yaml", tiny_model, DEMO_DATA, tmp_path / "out", max_steps=100000)
    job_id = submitted_id(cluster.ctl("--json", "submit", spec))
    cluster.wait_state(job_id, {"RUNNING"})
    res = cluster.ctl("cancel", job_id)
    assert res.returncode == 0, res.stderr
    job = cluster.wait_state(job_id, {"CANCELLED", "FAILED", "COMPLETED"}, timeout=60)
    assert job["state"] == "CANCELLED", job
