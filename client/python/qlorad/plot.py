"""A job's metrics as one matplotlib figure: loss (train and eval), learning rate, tokens/s and
VRAM (allocated and peak), against the step.

The figure is a matplotlib.figure.Figure made without pyplot: it needs no display and no
backend (it works headless; savefig picks the writer by file type), and pyplot's global state
never holds it, so a notebook shows it once, as the value of the cell that returns it.
Needs pandas and matplotlib: `pip install "qlorad[notebook]"`.
"""

from __future__ import annotations

import functools
import io
from typing import TYPE_CHECKING, Iterable, Union

from qlorad._optional import optional_import
from qlorad.frame import metrics_frame
from qlorad.types import StepMetrics

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Metrics = Union["pandas.DataFrame", Iterable[StepMetrics]]

_GIB = float(1 << 30)
PANELS = ("loss", "learning rate", "tokens/s", "VRAM (GiB)")


def plot_metrics(metrics: Metrics, *, title: str | None = None,
                 figsize: tuple[float, float] = (11.0, 7.0)) -> Figure:
    """A 2x2 figure of `metrics` (a frame from qlorad.frame.metrics_frame, or StepMetrics):
    - loss: the training loss and, where the job evaluated, the eval loss (rank 0: the ranks of
      one job report the same, averaged loss);
    - learning rate: rank 0's;
    - tokens/s and VRAM (allocated solid, peak dashed): one line per rank, each rank being a
      device of its own.
    The axes are in the order of PANELS; the x axis is the step. `title` defaults to the job id."""
    ticker = optional_import("matplotlib.ticker", "qlorad: plotting metrics", "notebook")
    pd = optional_import("pandas", "qlorad: plotting metrics", "notebook")
    frame = metrics if isinstance(metrics, pd.DataFrame) else metrics_frame(metrics)
    figure: Figure = _figure_class()(figsize=figsize, layout="constrained")
    axes = figure.subplots(2, 2, sharex=True).ravel()
    for ax, label in zip(axes, PANELS):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("step")
    axes[0].xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # shared by all four
    if title is None and len(frame):
        title = str(frame["job_id"].iloc[0])
    if title:
        figure.suptitle(title)
    if not len(frame):
        for ax in axes:
            _note(ax, "no steps yet")
        return figure

    ranks = sorted(int(r) for r in frame["rank"].unique())
    first = frame[frame["rank"] == ranks[0]]
    _plot_loss(axes[0], first)
    axes[1].plot(first["step"], first["lr"], label="lr")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    multi = len(ranks) > 1
    for rank in ranks:
        rows = frame[frame["rank"] == rank]
        suffix = f" (rank {rank})" if multi else ""
        axes[2].plot(rows["step"], rows["tokens_per_s"], label=f"tokens/s{suffix}")
        color = axes[3].plot(rows["step"], rows["vram_allocated_bytes"] / _GIB,
                             label=f"allocated{suffix}")[0].get_color()
        axes[3].plot(rows["step"], rows["vram_peak_bytes"] / _GIB, linestyle="--", color=color,
                     label=f"peak{suffix}")
    if multi:
        axes[2].legend(fontsize="small")
    axes[3].legend(fontsize="small")
    if not (frame["vram_peak_bytes"] > 0).any():
        _note(axes[3], "no GPU memory reported (a CPU job)")
    return figure


@functools.lru_cache(maxsize=None)
def _figure_class() -> type[Figure]:
    figure_module = optional_import("matplotlib.figure", "qlorad: plotting metrics", "notebook")

    class MetricsFigure(figure_module.Figure):  # type: ignore[misc,name-defined]
        """A Figure that IPython shows as a PNG even where pyplot was never imported: Jupyter's
        inline backend registers its display formatter only once pyplot has been."""

        def _repr_png_(self) -> bytes:
            out = io.BytesIO()
            self.savefig(out, format="png")
            return out.getvalue()

    return MetricsFigure


def _plot_loss(ax: Axes, rows: pandas.DataFrame) -> None:
    ax.plot(rows["step"], rows["loss"], label="train loss")
    evaluated = rows[rows["eval_loss"].notna()]
    if len(evaluated):
        ax.plot(evaluated["step"], evaluated["eval_loss"], marker="o", label="eval loss")
    ax.legend(fontsize="small")


def _note(ax: Axes, text: str) -> None:
    # Above the middle, where a CPU job's VRAM lines lie flat at zero.
    ax.text(0.5, 0.7, text, transform=ax.transAxes, ha="center", va="center", color="gray")
