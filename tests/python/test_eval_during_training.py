"""Evaluation during training (data.validation), on the CPU with the tiny model:
- the eval loss the trainer reports equals what `qlorad-train eval` computes for the adapter it
  wrote, within fp32 summation-order error, with LoRA dropout on in training (eval runs with it
  off), and evaluating does not change the training losses (no-grad, modes restored, no RNG);
- 2 Gloo ranks (`launch --nproc 2`, fsdp and ddp) reduce the eval loss exactly: it equals one
  rank's, with an odd number of eval batches so one rank runs a filler forward;
- early stopping ends the run after `patience` evaluations without improvement, and keep-best
  keeps the lowest-loss step's checkpoint and adapter apart from the rolling `keep` window;
  the kept adapter evaluates to the loss reported at that step.
Needs build/bin/qlorad-train (QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_parallel_launch import TRAIN  # noqa: E402
from test_parallel_launch import workdir as parallel_workdir  # noqa: E402, F401  (fixture)

REL = 1e-5  # fp32, different summation order


@pytest.fixture(scope="module")
def workdir(parallel_workdir) -> Path:
    """test_parallel_launch's tiny model and 40 training rows, plus 7 validation rows."""
    words = ["red", "green", "blue", "cyan", "magenta", "yellow", "black"]
    with open(parallel_workdir / "val.jsonl", "w") as f:
        for i in range(7):
            f.write(json.dumps({"text": f"{words[(i * 2) % 7]} after {words[i]} item {i}"}) + "\n")
    return parallel_workdir


def spec(root: Path, name: str, *, steps: int = 8, validation: str | None = None,
         evaluation: str = "", strategy: str = "auto", micro_batch: int = 1, grad_accum: int = 2,
         dropout: float = 0.1,
         every: int = 0, keep: int = 3, lr: float = 1.0e-2) -> Path:
    path = root / f"{name}.yaml"
    data_extra = f", validation: {validation}" if validation else ""
    path.write_text(f"""
name: {name}
model: {{path: {root / 'model'}}}
quantization: {{type: none}}
lora: {{r: 4, alpha: 8, dropout: {dropout}}}
data: {{path: {root / 'data.jsonl'}, max_seq_len: 48, packing: false, shuffle: true, seed: 5{data_extra}}}
train: {{max_steps: {steps}, micro_batch_size: {micro_batch}, grad_accum: {grad_accum}, lr: {lr}, warmup_steps: 2,
        precision: fp32, seed: 7{evaluation}}}
resources: {{device: cpu}}
parallel: {{strategy: {strategy}}}
checkpoint: {{every_steps: {every}, keep: {keep}, output_dir: {root / name}}}
""")
    return path


def run(job: Path, world: int = 1) -> list[dict]:
    cmd = [TRAIN, "run", job] if world == 1 else [TRAIN, "launch", "--nproc", str(world), job]
    proc = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def metrics(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "metrics"]


def evals(events: list[dict]) -> dict[int, float]:
    return {m["step"]: m["eval_loss"] for m in metrics(events) if "eval_loss" in m}


def done(events: list[dict]) -> dict:
    [d] = [e for e in events if e["event"] == "done"]
    return d


def eval_command(root: Path, adapter: Path, data: Path) -> float:
    out = subprocess.run([TRAIN, "eval", "--model", root / "model", "--adapter", adapter,
                          "--data", data, "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])["mean_loss"]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL)


def test_eval_loss_equals_the_eval_command_and_leaves_training_alone(workdir):
    plain = run(spec(workdir, "plain"))
    evaluated = run(spec(workdir, "evaluated", validation=str(workdir / "val.jsonl"),
                         evaluation=", eval_steps: 3"))
    # After steps 3 and 6, and after the last one.
    losses = evals(evaluated)
    assert sorted(losses) == [3, 6, 8], losses
    for m in metrics(evaluated):
        if "eval_loss" in m:
            assert math.isclose(m["eval_perplexity"], math.exp(m["eval_loss"]), rel_tol=1e-12)
    # Evaluating (no grad, dropout off and back on, no RNG drawn) changes no training step.
    assert [m["loss"] for m in metrics(evaluated)] == [m["loss"] for m in metrics(plain)]
    # The last eval is that of the adapter the run wrote, as `qlorad-train eval` computes it
    # (one example at a time, no dropout). Training has dropout 0.1: evaluating with it on would
    # miss by far more than fp32 error.
    reference = eval_command(workdir, Path(done(evaluated)["adapter_path"]), workdir / "val.jsonl")
    assert close(losses[8], reference), (losses[8], reference)


def test_a_fraction_of_the_training_file_is_held_out(workdir):
    events = run(spec(workdir, "fraction", validation="0.25", evaluation=", eval_steps: 4"))
    logs = " ".join(e["message"] for e in events if e["event"] == "log")
    assert "validation: 10 examples held out of" in logs, logs
    assert "data: 30 examples" in logs, logs
    assert sorted(evals(events)) == [4, 8]


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_two_gloo_ranks_reduce_the_eval_loss_to_one_ranks(workdir, strategy):
    # 7 validation rows in batches of 2, the first 3 batches: rank 0 evaluates batches 0 and 2,
    # rank 1 batch 1 and a filler it must not count.
    evaluation = ", eval_steps: 2, eval_batches: 3"
    val = str(workdir / "val.jsonl")
    # The same 4 training rows per step: 2 x 2 on one rank, 2 x 1 on each of two.
    one = run(spec(workdir, f"one-{strategy}", validation=val, evaluation=evaluation,
                   micro_batch=2, grad_accum=2, strategy="single", dropout=0.0))
    two = run(spec(workdir, f"two-{strategy}", validation=val, evaluation=evaluation,
                   micro_batch=2, grad_accum=1, strategy=strategy, dropout=0.0), world=2)
    want, got = evals(one), evals(two)
    assert sorted(want) == sorted(got) == [2, 4, 6, 8]
    for step in want:
        assert close(got[step], want[step]), (step, got[step], want[step])
