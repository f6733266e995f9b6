"""Early stopping and keep-best (data.validation + train.early_stopping), on the CPU with the
tiny model: the run stops after `patience` evaluations without an improvement larger than
min_delta; the lowest-loss step's resume checkpoint and adapter stay in <output_dir>/best,
whatever the rolling `checkpoint.keep` window deletes, are named in the done event, and the kept
adapter evaluates (`qlorad-train eval`) to the loss reported at that step. A resumed run keeps
the best and its patience count. Needs build/bin/qlorad-train (QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_during_training import (TRAIN, close, done, eval_command, evals,  # noqa: E402
                                       metrics, parallel_workdir, run, spec,  # noqa: F401
                                       workdir)  # noqa: F401  (the fixtures)


def test_early_stopping_stops_and_keeps_the_best(workdir):
    # min_delta larger than any gain: every evaluation after the first uses up patience, so with
    # patience 2 the run stops at the third evaluation, step 6 of 20.
    job = spec(workdir, "early", steps=20, validation=str(workdir / "val.jsonl"),
               evaluation=", eval_steps: 2, early_stopping: {patience: 2, min_delta: 100.0}",
               every=1, keep=1)
    events = run(job)
    losses = evals(events)
    assert sorted(losses) == [2, 4, 6], losses
    assert [m["step"] for m in metrics(events)] == list(range(1, 7))
    d = done(events)
    assert d["stopped_early"] is True and d["steps"] == 6
    best_step = min(losses, key=losses.get)
    assert d["best_step"] == best_step and d["best_eval_loss"] == losses[best_step]

    out = workdir / "early"
    best = Path(d["best_checkpoint_path"])
    assert best == out / "best" / f"step-{best_step}"
    assert Path(d["best_adapter_path"]) == best / "adapter"
    # One best checkpoint; the rolling window (keep: 1) holds only the last periodic one.
    assert [p.name for p in (out / "best").iterdir()] == [best.name]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-5"]
    state = json.loads((best / "state.json").read_text())
    assert state["step"] == best_step and state["eval"]["best_step"] == best_step

    # The kept adapter is the one that was evaluated, and the final adapter is another.
    kept = eval_command(workdir, best / "adapter", workdir / "val.jsonl")
    assert close(kept, losses[best_step]), (kept, losses[best_step])
    if best_step != 6:
        final = eval_command(workdir, Path(d["adapter_path"]), workdir / "val.jsonl")
        assert close(final, losses[6]) and not close(final, kept)


def test_a_resumed_run_keeps_the_best_and_its_patience(workdir):
    evaluation = ", eval_steps: 2, early_stopping: {patience: 3, min_delta: 100.0}"
    whole = run(spec(workdir, "whole", steps=20, validation=str(workdir / "val.jsonl"),
                     evaluation=evaluation))
    assert done(whole)["steps"] == 8  # evaluations at 2, 4, 6, 8: the last three without gain

    job = spec(workdir, "resumed", steps=20, validation=str(workdir / "val.jsonl"),
               evaluation=evaluation, every=4)
    first = subprocess.run([TRAIN, "run", job, "--json"], capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    # Resume from step 4: patience already holds one evaluation without gain (step 4's).
    resumed = run_resumed(job, workdir / "resumed" / "checkpoints" / "step-4")
    d = done(resumed)
    assert d["stopped_early"] and d["steps"] == 8, d
    assert d["best_step"] == done(whole)["best_step"]
    assert close(d["best_eval_loss"], done(whole)["best_eval_loss"])


def run_resumed(job: Path, checkpoint: Path) -> list[dict]:
    proc = subprocess.run([TRAIN, "run", job, "--json", "--resume", checkpoint],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]
