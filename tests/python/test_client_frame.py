"""Metrics as a pandas DataFrame and as a matplotlib figure (qlorad/frame.py, qlorad/plot.py):
from StepMetrics made here, and from jobs that a scripted worker (test_client_training.py) runs
through a real coordinator, one rank and two, while they run and once they have ended."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import threading

import pytest

from test_client import REPO, client, run_with_timeout, server, spec  # noqa: F401  (fixtures)
from test_client_training import ScriptedWorker

pytest.importorskip("pandas", reason="pandas is not installed (scripts/deps.sh installs it)")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (scripts/deps.sh has it)")

from qlorad import JobState, StepMetrics  # noqa: E402
from qlorad._gen.v1 import common_pb2, workers_pb2  # noqa: E402
from qlorad.frame import metrics_frame  # noqa: E402
from qlorad.plot import PANELS, plot_metrics  # noqa: E402
from qlorad.types import Job  # noqa: E402

GIB = 1 << 30
PNG = b"\x89PNG\r\n\x1a\n"
DTYPES = {"job_id": "str", "rank": "int32", "step": "int64", "total_steps": "int64",
          "loss": "float64", "lr": "float64", "grad_norm": "float64", "tokens_per_s": "float64",
          "vram_allocated_bytes": "int64", "vram_reserved_bytes": "int64",
          "vram_peak_bytes": "int64", "wall_time_s": "float64", "attempt": "int32",
          "eval_loss": "float64", "eval_perplexity": "float64", "eval_accuracy": "float64"}


def step(n: int, rank: int = 0, attempt: int = 0, **fields) -> StepMetrics:
    """Rank- and step-dependent values, so a value in the wrong row shows."""
    values = dict(job_id="job-f", rank=rank, step=n, total_steps=4, loss=3.0 - 0.5 * n,
                  lr=1e-3 * n, grad_norm=0.25 * n, tokens_per_s=1000.0 * n + rank,
                  vram_allocated_bytes=(n + rank) * GIB, vram_reserved_bytes=(n + rank + 1) * GIB,
                  vram_peak_bytes=(n + rank + 2) * GIB, wall_time_s=0.5 * n, attempt=attempt)
    values.update(fields)
    return StepMetrics(**values)


def records(frame) -> list[dict]:
    """The rows as dicts of plain Python values, NaN as None (NaN != NaN)."""
    out = []
    for row in frame.to_dict("records"):
        out.append({k: None if isinstance(v, float) and math.isnan(v) else v
                    for k, v in row.items()})
    return out


def as_dict(m: StepMetrics) -> dict:
    return {name: getattr(m, name) for name in DTYPES}


# --- the frame, from StepMetrics made here


def test_frame_has_a_typed_column_per_field_and_the_values_sent():
    sent = [step(1), step(2, eval_loss=1.5, eval_perplexity=math.exp(1.5), eval_accuracy=0.75),
            step(3)]
    frame = metrics_frame(sent)
    assert {c: str(t) for c, t in frame.dtypes.items()} == DTYPES  # every field, in order
    assert records(frame) == [as_dict(m) for m in sent]
    assert frame["eval_loss"].isna().tolist() == [True, False, True]  # NaN where not evaluated


def test_frame_is_one_row_per_step_and_rank_sorted_from_the_newest_attempt():
    # Arrival order: rank 1 before rank 0, and a retry (attempt 1) that repeats step 2.
    sent = [step(1, rank=1), step(1), step(2), step(2, rank=1),
            step(2, attempt=1, loss=9.0), step(3, attempt=1)]
    frame = metrics_frame(sent)
    assert list(zip(frame["step"], frame["rank"], frame["attempt"])) == \
        [(1, 0, 0), (1, 1, 0), (2, 0, 1), (2, 1, 0), (3, 0, 1)]
    assert frame.loc[frame["step"] == 2, "loss"].tolist() == [9.0, 2.0]
    every = metrics_frame(sent, all_attempts=True)
    assert len(every) == len(sent)
    assert list(zip(every["attempt"], every["step"], every["rank"])) == \
        [(0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 2, 0), (1, 3, 0)]


def test_an_empty_frame_keeps_its_columns_and_types():
    frame = metrics_frame([])
    assert len(frame) == 0
    assert {c: str(t) for c, t in frame.dtypes.items()} == DTYPES


def test_without_pandas_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError,
                       match=r'metrics as a DataFrame needs pandas.*qlorad\[dataframe\]'):
        metrics_frame([step(1)])
    with pytest.raises(ImportError, match=r'plotting metrics needs pandas.*qlorad\[notebook\]'):
        plot_metrics([step(1)])


def test_importing_the_client_imports_neither_pandas_nor_matplotlib():
    code = ("import sys, qlorad.client, qlorad.types, qlorad.notebook; "
            "print(sorted(m for m in ('pandas', 'matplotlib') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO / "client" / "python")})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# --- the figure


def line(ax, label: str):
    (found,) = [l for l in ax.get_lines() if l.get_label() == label]
    return list(found.get_xdata()), list(found.get_ydata())


def test_plot_has_the_four_panels_with_the_values_of_each_rank():
    sent = [step(1), step(1, rank=1), step(2, eval_loss=1.25), step(2, rank=1, loss=2.0),
            step(3), step(3, rank=1)]
    figure = plot_metrics(sent)
    loss, lr, tokens, vram = figure.axes
    assert [ax.get_ylabel() for ax in figure.axes] == list(PANELS)
    assert [ax.get_xlabel() for ax in (tokens, vram)] == ["step", "step"]
    assert figure.get_suptitle() == "job-f"
    # Loss and lr from rank 0; the eval loss only where evaluated.
    assert line(loss, "train loss") == ([1, 2, 3], [2.5, 2.0, 1.5])
    assert line(loss, "eval loss") == ([2], [1.25])
    assert line(lr, "lr") == ([1, 2, 3], [1e-3, 2e-3, 3e-3])
    for rank in (0, 1):
        assert line(tokens, f"tokens/s (rank {rank})") == ([1, 2, 3], [1000.0 + rank, 2000.0 + rank,
                                                                      3000.0 + rank])
        assert line(vram, f"allocated (rank {rank})") == ([1, 2, 3], [1.0 + rank, 2.0 + rank,
                                                                      3.0 + rank])
        assert line(vram, f"peak (rank {rank})")[1] == [3.0 + rank, 4.0 + rank, 5.0 + rank]


def test_plot_of_one_rank_without_evaluation_or_gpu_says_so(tmp_path):
    import matplotlib.pyplot as plt

    figure = plot_metrics(metrics_frame([step(1, vram_allocated_bytes=0, vram_reserved_bytes=0,
                                              vram_peak_bytes=0), step(2, vram_peak_bytes=0,
                                              vram_allocated_bytes=0, vram_reserved_bytes=0)]),
                          title="cpu job")
    loss, _, tokens, vram = figure.axes
    assert [l.get_label() for l in loss.get_lines()] == ["train loss"]
    assert [l.get_label() for l in tokens.get_lines()] == ["tokens/s"]
    assert [l.get_label() for l in vram.get_lines()] == ["allocated", "peak"]
    assert "no GPU memory reported (a CPU job)" in [t.get_text() for t in vram.texts]
    assert figure.get_suptitle() == "cpu job"
    # Headless: no display, no pyplot figure left behind, and it still renders.
    assert plt.get_fignums() == []
    out = tmp_path / "metrics.png"
    figure.savefig(out)
    assert out.read_bytes()[:8] == PNG
    # What Jupyter shows for the figure where pyplot (and so the inline backend) never loaded.
    assert figure._repr_png_()[:8] == PNG


def test_plot_of_no_steps_draws_empty_panels():
    figure = plot_metrics([], title="queued")
    assert len(figure.axes) == 4 and all(not ax.get_lines() for ax in figure.axes)
    assert all([t.get_text() for t in ax.texts] == ["no steps yet"] for ax in figure.axes)


# --- through a real coordinator


def report_steps(report, start, steps: list[StepMetrics]):
    for m in steps:
        fields = {k: getattr(m, k) for k in DTYPES if k not in ("job_id", "rank", "attempt")
                  and getattr(m, k) is not None}
        report(start, metrics=common_pb2.StepMetrics(**fields))


def finish(report, start, steps: int, loss: float):
    Event = workers_pb2.TrainerEvent
    if start.rank == 0:
        report(start, done=Event.Done(steps=steps, adapter_path="/runs/f/adapter", final_loss=loss))
    report(start, exit=Event.Exit(exit_code=0))


def frame_spec(name: str, steps: int, gpus: int = 1) -> dict:
    s = spec(name, max_steps=steps)
    s["scheduling"]["max_restarts"] = 0
    s["resources"] = {"gpus": gpus}
    return s


def test_dataframe_of_a_running_job_is_what_is_stored_now_without_waiting(server, client):  # noqa: F811
    sent = [step(1), step(2, eval_loss=1.5, eval_perplexity=math.exp(1.5)), step(3), step(4)]
    reported_two, go_on = threading.Event(), threading.Event()

    def two_then_the_rest(report, start):
        report_steps(report, start, sent[:2])
        reported_two.set()
        go_on.wait(30)
        report_steps(report, start, sent[2:])
        finish(report, start, 4, sent[-1].loss)

    job = client.submit(frame_spec("framed", 4))
    worker = ScriptedWorker(server, two_then_the_rest)
    assert reported_two.wait(30)
    running = client.get(job.id)
    assert running.state is JobState.RUNNING
    # The job runs on, waiting for go_on: a call that followed the stream would not return.
    frame = run_with_timeout(lambda: running.dataframe(), timeout=20)
    assert records(frame) == [dict(as_dict(m), job_id=job.id) for m in sent[:2]]
    assert [m.step for m in run_with_timeout(lambda: list(client.metrics(job.id, follow=False)),
                                             timeout=20)] == [1, 2]
    figure = run_with_timeout(lambda: client.plot(job.id), timeout=20)
    assert line(figure.axes[0], "train loss") == ([1, 2], [2.5, 2.0])
    assert figure.get_suptitle() == job.id

    go_on.set()
    # follow=True reads on until the job ends.
    frame = run_with_timeout(lambda: client.dataframe(job.id, follow=True), timeout=30)
    worker.join()
    assert records(frame) == [dict(as_dict(m), job_id=job.id) for m in sent]
    final = client.wait(job.id, timeout=10)
    assert final.state is JobState.COMPLETED
    assert records(final.dataframe()) == records(frame)  # an ended job: every step


def test_a_two_rank_job_has_a_row_and_a_line_per_rank(server, client):  # noqa: F811
    job = client.submit(frame_spec("two-ranks", 3, gpus=2))

    def rank_steps(report, start):
        report_steps(report, start, [step(n, rank=start.rank) for n in (1, 2, 3)])
        finish(report, start, 3, step(3).loss)

    # Two names: a worker registering under a name already known is taken for that one, back.
    workers = [ScriptedWorker(server, rank_steps, name=f"scripted-{i}") for i in range(2)]
    final = run_with_timeout(lambda: client.wait(job.id, timeout=30), timeout=40)
    for w in workers:
        w.join()
    assert final.state is JobState.COMPLETED, final.error
    frame = final.dataframe()
    assert list(zip(frame["step"], frame["rank"])) == \
        [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert frame["tokens_per_s"].tolist() == [1000.0, 1001.0, 2000.0, 2001.0, 3000.0, 3001.0]
    vram = final.plot().axes[3]
    assert line(vram, "allocated (rank 1)") == ([1, 2, 3], [2.0, 3.0, 4.0])
    assert line(vram, "peak (rank 0)") == ([1, 2, 3], [3.0, 4.0, 5.0])


def test_a_job_keeps_its_client_but_not_through_pickling(client):  # noqa: F811
    job = client.submit(frame_spec("queued", 3))
    assert len(job.dataframe()) == 0  # queued: nothing stored, and no waiting either
    restored = pickle.loads(pickle.dumps(job))
    assert restored == job
    with pytest.raises(RuntimeError, match=f"job {job.id} has no qlorad.Client"):
        restored.plot()
    with pytest.raises(RuntimeError, match="made by hand"):
        Job.from_proto(common_pb2.Job(id="job-x")).dataframe()
