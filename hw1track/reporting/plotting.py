"""Figure conventions shared by every analysis: readable defaults, saving, and logging back to MLflow."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from hw1track.stats.intervals import CONFIDENCE, Interval, band, mean_interval  # noqa: E402
from hw1track.tracking.runs import TrackedRun  # noqa: E402
from hw1track.training.data import IMAGE_SETS, MNIST  # noqa: E402
from mlflow.entities import Run  # noqa: E402

plt.rcParams.update({
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 11,
    "legend.fontsize": 8,
    "figure.constrained_layout.use": True,
})


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 6.0, height: float = 4.0,
             **kwargs) -> tuple[Figure, object]:
    """A figure sized per panel, so multi-panel figures stay legible."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kwargs)


def save_figures(figures: Mapping[str, Figure], folder: Path, parent: TrackedRun | None = None) -> list[Path]:
    """Write each figure as `<folder>/<name>.png` and, given a run, log it under its `figures/` artifacts."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        path = folder / f"{name}.png"
        figure.savefig(path)
        plt.close(figure)
        if parent is not None:
            parent.log_file(path, "figures")
        paths.append(path)
    return paths


def plot_curves(ax, history, key: str, labels: Mapping[str, str], *, linestyle: str = "-",
                colors: Mapping[str, str] | None = None, suffix: str = "") -> None:
    """One line per run of metric `key` from a `StoreReader.history` frame, labelled by run id."""
    for run_id, label in labels.items():
        series = history[(history.run_id == run_id) & (history.key == key)]
        color = colors.get(run_id) if colors else None
        ax.plot(series.step, series.value, linestyle=linestyle, color=color, label=f"{label}{suffix}")


def run_colors(run_ids) -> dict[str, str]:
    """A stable colour per run, shared by every panel of a figure."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {run_id: cycle[i % len(cycle)] for i, run_id in enumerate(run_ids)}


def dataset_title(run: Run) -> str:
    """How a figure names the images `run` (a parent or a child) trained on: runs from before the choice are MNIST."""
    return IMAGE_SETS[run.data.params.get("dataset", MNIST.name)].title


def seeds_text(n: int) -> str:
    """'3 seeds', or '1 seed (no spread)': a figure says how many replicates each curve or point rests on."""
    return f"{n} seeds" if n != 1 else "1 seed (no spread)"


def plot_band(ax, history, key: str, run_ids, *, color: str, label: str, linestyle: str = "-",
              log: bool = False, thin: bool = False) -> int:
    """Metric `key` of the replicates `run_ids`: their mean and its 95 % band; returns how many were drawn.

    One replicate is drawn as its plain curve, as before replicates existed.
    `log` takes the mean and band of log10 values (for a log axis); `thin`
    adds each replicate as a thin line, for figures with few curves.
    """
    rows = history[(history.key == key) & history.run_id.isin(list(run_ids))]
    curves = rows.pivot_table(index="step", columns="run_id", values="value", aggfunc="last").sort_index()
    n = curves.shape[1]
    if n == 0:
        return 0
    if n == 1:
        ax.plot(curves.index, curves.iloc[:, 0], color=color, linestyle=linestyle, label=label)
        return 1
    if thin:
        for column in curves.columns:
            ax.plot(curves.index, curves[column], color=color, linestyle=linestyle, linewidth=0.5, alpha=0.35)
    summary = band(curves, log=log)
    ax.plot(summary.index, summary["mean"], color=color, linestyle=linestyle,
            label=f"{label} ({'geometric ' if log else ''}mean of {n} seeds, {CONFIDENCE:.0%} CI)")
    ax.fill_between(summary.index, summary["low"], summary["high"], color=color, alpha=0.18, linewidth=0)
    return n


def geometric_interval(values) -> Interval:
    """The mean and interval of log10 `values`, mapped back: what a point on a log axis can show.

    An arithmetic t interval of two or three positive values easily reaches
    below zero, which a log axis cannot draw; the geometric one stays positive,
    as `band(log=True)` does for curves. Non-positive values count as missing.
    """
    data = np.asarray(list(values), dtype=float)
    positive = data[data > 0]
    if len(positive) < 2:  # no interval: the point is the value itself, not 10 ** log10 of it
        return mean_interval(positive)
    logged = mean_interval(np.log10(positive))
    return Interval(10.0 ** logged.mean, 10.0 ** logged.low, 10.0 ** logged.high, logged.n)


def plot_intervals(ax, x, intervals: list[Interval], *, fmt: str = "-o", color: str | None = None,
                   label: str = "", **style) -> None:
    """Per-configuration means with 95 % error bars, once any point rests on several seeds.

    When every point rests on one seed it is the plain line figures drew before
    replicates existed, so a one-seed study's figure is unchanged; `style`
    (linewidth, markersize, ...) applies to the line in both cases.
    """
    n = max((interval.n for interval in intervals), default=0)
    means = [interval.mean for interval in intervals]
    if n < 2:
        ax.plot(x, means, fmt, color=color, label=label, **style)
        return
    below = [0.0 if math.isnan(i.low) else i.mean - i.low for i in intervals]
    above = [0.0 if math.isnan(i.high) else i.high - i.mean for i in intervals]
    bars = ax.errorbar(x, means, yerr=[below, above], fmt=fmt, color=color, capsize=3,
                       label=f"{label} (mean of {n} seeds, {CONFIDENCE:.0%} CI)")
    if style:
        bars.lines[0].set(**style)


def bounded_interval(values, low: float = float("-inf"), high: float = float("inf")) -> Interval:
    """`mean_interval` cut to the range the quantity cannot leave (an accuracy's [0, 1], a loss's [0, ∞)).

    With two or three seeds the t interval easily reaches past such a bound,
    which stretches a figure's axis over values nothing can take; its part
    inside the range covers the true mean just as often.
    """
    found = mean_interval(values)
    if found.n < 2:
        return found
    return Interval(found.mean, min(max(found.low, low), high), max(min(found.high, high), low), found.n)


def limit_to_lines(*axes, margin: float = 0.05) -> None:
    """Fit the y-axis to the drawn lines (means and single seeds), letting wider 95 % bands run off the panel.

    With two or three seeds the t factor makes a band span decades; scaled to
    the band, the curves it surrounds would be squeezed flat. A band cut at the
    edge still says "wider than this". Panels that share a y-axis are passed
    together: fitted one at a time, the last would set the limits for all and
    cut the others' lines off.
    """
    ax = axes[0]
    values = [np.asarray(line.get_ydata(), dtype=float) for panel in axes for line in panel.get_lines()]
    values = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if ax.get_yscale() == "log":
        values = values[values > 0]
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    if ax.get_yscale() == "log":
        low, high = np.log10(low), np.log10(high)
        pad = max(high - low, 0.1) * margin
        limits = 10 ** (low - pad), 10 ** (high + pad)
    else:
        pad = max(high - low, 1e-12) * margin
        limits = low - pad, high + pad
    for panel in axes:
        panel.set_ylim(*limits)
