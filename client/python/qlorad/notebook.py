"""Watching a job from Jupyter: qlorad.notebook.watch(client, job_id).

In a Jupyter kernel with matplotlib installed it shows a loss plot that redraws as steps arrive;
anywhere else (a terminal, a script, no matplotlib) it prints one line per step. Either way it
returns the finished Job.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from qlorad.client import Client
from qlorad.types import Job, StepMetrics

# Redrawing a figure costs tens of milliseconds; steps can come much faster than that.
_REDRAW_INTERVAL_S = 0.5


def _ipython_shell():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _in_jupyter_kernel() -> bool:
    shell = _ipython_shell()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class _LossPlot:
    """A matplotlib figure shown once and updated in place through an IPython display handle."""

    def __init__(self, job_id: str):
        import matplotlib.pyplot as plt
        from IPython.display import display

        self._plt = plt
        self.figure, self.axes = plt.subplots(figsize=(7, 3.5))
        self.axes.set_xlabel("step")
        self.axes.set_ylabel("loss")
        self.axes.set_title(job_id)
        (self.line,) = self.axes.plot([], [], marker=".", label="loss")
        (self.eval_line,) = self.axes.plot([], [], marker="o", label="eval loss")
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.eval_steps: list[int] = []
        self.eval_losses: list[float] = []
        self._last_draw = 0.0
        self.handle = display(self.figure, display_id=True)

    def add(self, m: StepMetrics) -> None:
        self.steps.append(m.step)
        self.losses.append(m.loss)
        if m.eval_loss is not None:
            self.eval_steps.append(m.step)
            self.eval_losses.append(m.eval_loss)
        if time.monotonic() - self._last_draw >= _REDRAW_INTERVAL_S:
            self.redraw()

    def redraw(self, title: str | None = None) -> None:
        self.line.set_data(self.steps, self.losses)
        self.eval_line.set_data(self.eval_steps, self.eval_losses)
        if self.eval_steps:
            self.axes.legend(loc="upper right")
        if title:
            self.axes.set_title(title)
        self.axes.relim()
        self.axes.autoscale_view()
        self.handle.update(self.figure)
        self._last_draw = time.monotonic()

    def close(self) -> None:
        # The figure lives on in the display; closing stops the inline backend showing it twice.
        self._plt.close(self.figure)


def step_line(m: StepMetrics) -> str:
    total = m.total_steps if m.total_steps > 0 else "?"
    evaluated = ""
    if m.eval_loss is not None:
        evaluated = f"  eval_loss {m.eval_loss:.4f}  eval_ppl {m.eval_perplexity:.2f}"
    return (f"step {m.step}/{total}  loss {m.loss:.4f}{evaluated}  lr {m.lr:.2e}  "
            f"grad_norm {m.grad_norm:.4f}  {m.tokens_per_s:.0f} tok/s")


def final_line(job: Job) -> str:
    line = f"job {job.id} {job.state.value}"
    if job.last_step > 0:
        line += f" at step {job.last_step} (loss {job.last_loss:.4f})"
    if job.adapter_path:
        line += f"\nadapter written to {job.adapter_path}"
        if job.stopped_early:
            line += " (stopped early: train.early_stopping)"
    if job.best is not None:
        line += (f"\nbest adapter (eval loss {job.best.eval_loss:.4f} at step {job.best.step}) "
                 f"in {job.best.adapter_path}")
    if job.error:
        line += f"\nerror: {job.error}"
    return line


def watch(client: Client, job_id: str, from_step: int = 0, *, plot: bool | None = None,
          file: TextIO | None = None) -> Job:
    """Follows rank 0's steps of `job_id` until the job ends; returns the final Job.
    plot=None plots when running in a Jupyter kernel with matplotlib; False always prints."""
    out = file or sys.stdout
    if plot is None:
        plot = _in_jupyter_kernel() and _has_matplotlib()
    elif plot and (_ipython_shell() is None or not _has_matplotlib()):
        # Outside IPython there is no display to update in place.
        raise RuntimeError("qlorad.notebook.watch(plot=True) needs matplotlib and a running "
                           "IPython/Jupyter shell; use plot=False for text")
    view = _LossPlot(job_id) if plot else None
    try:
        for m in client.metrics(job_id, from_step):
            if m.rank != 0:
                continue
            if view:
                view.add(m)
            else:
                print(step_line(m), file=out, flush=True)
        job = client.get(job_id)
        if view:
            view.redraw(title=f"{job_id}: {job.state.value}")
    finally:
        if view:
            view.close()
    print(final_line(job), file=out, flush=True)
    return job


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
