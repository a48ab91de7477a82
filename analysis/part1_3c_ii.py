"""part1_3c_ii figures and claims: final loss and accuracy with sensitivity and sharpness, and the Hessian's
λ_max and trace, against the batch size.

Every batch size is trained once per replicate, all batch sizes of one
replicate from the same initial weights; the figure shows each batch size's
mean over replicates with its 95 % interval, and the claims correlate a measure
with the batch size within each replicate before averaging over replicates, so
that what a seed shifts for every batch size alike does not count as noise.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from mlflow.entities import Run

from hw1track.measures.hessian_spectrum import SpectralDensity
from hw1track.reporting.plotting import (bounded_interval, dataset_title, geometric_interval, plot_intervals,
                                         seeds_text, subplots)
from hw1track.stats.claims import Claim, trend_over_seeds
from hw1track.stats.intervals import Interval
from hw1track.tracking.names import HESSIAN_DENSITY_ARTIFACT, PARAM_REPLICATE
from hw1track.tracking.query import StoreReader, replicate

DENSITY_COLORS = {True: "tab:blue", False: "tab:red"}  # smallest batch, largest batch
EQUAL_EPOCHS, EQUAL_UPDATES = "equal_epochs", "equal_updates"  # the arms of runs/part1_3c_ii.py (param `arm`)
SHARPNESS_PREFIX = "sharpness_eps"
SHARPNESS_CLAIMED = "sharpness_eps1e-3"
TRAIN_COLOR, TEST_COLOR = "tab:blue", "tab:orange"
# With error bars, train and test of one batch size sit this factor left and right of it, so their bars do not overlap.
DODGE = {"train": 10 ** -0.02, "test": 10 ** 0.02}
# The range each plotted quantity cannot leave, so that a few seeds' intervals stay on the axis.
ACCURACY_RANGE, NON_NEGATIVE = (0.0, 1.0), (0.0, math.inf)


def _final_values(children: list[Run], arm: str = EQUAL_EPOCHS) -> pd.DataFrame:
    """One row per trained model of `arm`: its batch size, replicate and final metrics (none: an empty frame).

    Runs from before the arms existed have no `arm` param: they were all equal epochs.
    """
    rows = [{"batch_size": int(run.data.params["batch_size"]), PARAM_REPLICATE: replicate(run), **run.data.metrics}
            for run in children if run.data.params.get("arm", EQUAL_EPOCHS) == arm]
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["batch_size", PARAM_REPLICATE]).reset_index(drop=True)


def _per_batch_size(final: pd.DataFrame, key: str, bounds: tuple[float, float]) -> list[Interval]:
    """The mean and interval of `key` over the replicates of each batch size, smallest batch first."""
    return [bounded_interval(values, *bounds) for _, values in final.groupby("batch_size")[key]]


def _plot_loss_and_accuracy(ax, final: pd.DataFrame, n_seeds: int) -> None:
    batch_sizes = sorted(final.batch_size.unique())
    for split, color in (("train", TRAIN_COLOR), ("test", TEST_COLOR)):
        x = [b * DODGE[split] for b in batch_sizes] if n_seeds > 1 else batch_sizes
        plot_intervals(ax, x, _per_batch_size(final, f"{split}_loss", NON_NEGATIVE), fmt="-o", color=color,
                    label=f"{split} cross-entropy")
        plot_intervals(ax, x, _per_batch_size(final, f"{split}_acc", ACCURACY_RANGE), fmt="--s", color=color,
                    label=f"{split} accuracy")
    ax.set(xscale="log", xlabel="batch size (log scale)",
           ylabel="cross-entropy (nats)  /  accuracy (fraction)")
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes], rotation=45, fontsize=8)
    ax.minorticks_off()


def _legend(ax, twin, n_seeds: int) -> None:
    """Inside the panel for one seed; below it for several, whose longer labels would hide the error bars."""
    lines, labels = (a + b for a, b in zip(ax.get_legend_handles_labels(), twin.get_legend_handles_labels()))
    if n_seeds > 1:
        ax.legend(lines, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7)
    else:
        ax.legend(lines, labels, loc="center left", fontsize=7)


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    final = _final_values(children)
    batch_sizes = sorted(final.batch_size.unique())
    n_seeds = int(final.groupby("batch_size").size().max())
    sharpness_keys = sorted((key for key in final.columns if key.startswith(SHARPNESS_PREFIX)),
                            key=lambda key: -float(key.removeprefix(SHARPNESS_PREFIX)))
    updates = _updates_text(final)

    fig, (left, right) = subplots(1, 2, width=6.2, height=4.6)
    _plot_loss_and_accuracy(left, final, n_seeds)
    sensitivity_ax = left.twinx()
    plot_intervals(sensitivity_ax, batch_sizes, _per_batch_size(final, "sensitivity", NON_NEGATIVE), fmt="-^",
                color="tab:green", label="sensitivity (test)", linewidth=2)
    sensitivity_ax.set_ylabel("sensitivity: mean ‖∂softmax/∂x‖_F", color="tab:green")
    sensitivity_ax.grid(False)
    left.set_title("Sensitivity vs batch size")
    _legend(left, sensitivity_ax, n_seeds)

    _plot_loss_and_accuracy(right, final, n_seeds)
    sharpness_ax = right.twinx()
    for key, color in zip(sharpness_keys, ("tab:red", "tab:purple")):
        epsilon = key.removeprefix(SHARPNESS_PREFIX)
        plot_intervals(sharpness_ax, batch_sizes, _per_batch_size(final, key, NON_NEGATIVE), fmt="-D", color=color,
                    label=f"sharpness, ε = {epsilon}", linewidth=2)
    sharpness_ax.set_ylabel("sharpness φ_ε (% rise of training loss)", color="tab:red")
    sharpness_ax.grid(False)
    right.set_title("Sharpness (Keskar et al. 2017) vs batch size")
    _legend(right, sharpness_ax, n_seeds)

    fig.suptitle(f"{dataset_title(parent)} MLP, same epochs for every batch size, {seeds_text(n_seeds)} each "
                 f"(updates per model: {updates})", fontsize=9)
    image_set = dataset_title(parent)
    drawn = {"batch_size": fig, "curvature": _curvature_figure(final, n_seeds, updates, image_set),
             "hessian_density": _density_figure(reader, children, n_seeds, image_set)}
    equal = _final_values(children, EQUAL_UPDATES)
    if not equal.empty:
        drawn["equal_updates"] = _equal_updates_figure(equal, n_seeds, image_set)
    return drawn


def _updates_text(final: pd.DataFrame) -> str:
    return ", ".join(f"{b}: {int(u)}" for b, u in final.groupby("batch_size").n_updates.first().items())


def _equal_updates_figure(equal: pd.DataFrame, n_seeds: int, image_set: str):
    """The second arm: every batch size with about the same number of updates, so that batch size is the only
    difference. The final training loss shows whether the models sit at comparable losses."""
    fig, axes = subplots(1, 3, width=6.2, height=3.8)
    panels = (("train_loss", "final training cross-entropy (nats)", "tab:blue"),
              (SHARPNESS_CLAIMED, "sharpness φ_ε, ε = 1e-3 (% rise of loss)", "tab:red"),
              ("lambda_max", "Hessian λ_max (Lanczos)", "tab:purple"))
    for ax, (key, label, color) in zip(axes, panels):
        _log_log_panel(ax, equal, key, color, legend="geometric", ylabel=label)
    fig.suptitle(f"{image_set} MLP, equal updates for every batch size, same learning rate, {seeds_text(n_seeds)} each "
                 f"(updates per model: {_updates_text(equal)})", fontsize=9)
    return fig


def _density_figure(reader: StoreReader, children: list[Run], n_seeds: int, image_set: str):
    """The Hessian's eigenvalue density of the smallest- and the largest-batch models, one line per seed.

    Each seed's SLQ nodes are spread by a Gaussian a 200th of the plotted range wide; the y axis is
    logarithmic because the density is a bulk near zero and a few outliers orders of magnitude rarer.
    """
    tables = {}
    for run in children:
        if HESSIAN_DENSITY_ARTIFACT in reader.artifacts(run):
            frame = pd.read_csv(reader.download(run, HESSIAN_DENSITY_ARTIFACT))
            tables[int(run.data.params["batch_size"]), replicate(run)] = frame
    fig, ax = subplots(1, 1, width=6.2, height=4.2)
    if not tables:
        ax.set_title("No Hessian density was logged for this run")
        return fig
    low = min(frame.eigenvalue.min() for frame in tables.values())
    high = max(frame.eigenvalue.max() for frame in tables.values())
    margin = 0.05 * (high - low)
    grid = torch.linspace(low - margin, high + margin, 1001)
    width = (high - low) / 200
    for (batch_size, _), frame in sorted(tables.items()):
        density = SpectralDensity(torch.tensor(frame.eigenvalue.values).reshape(frame.probe.nunique(), -1),
                                  torch.tensor(frame.weight.values).reshape(frame.probe.nunique(), -1), 0)
        color = DENSITY_COLORS[batch_size == min(batch for batch, _ in tables)]
        ax.plot(grid, density.smoothed(grid, width).clamp(min=1e-12), color=color, linewidth=1, alpha=0.8,
                label=f"batch {batch_size}")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), [f"{label} ({seeds_text(n_seeds)}, one line each)" for label in unique], fontsize=7)
    ax.set(yscale="log", ylim=(1e-6, None), xlabel="Hessian eigenvalue λ of the training cross-entropy",
           ylabel="density of eigenvalues (1 / unit of λ)",
           title=f"{image_set} MLP: Hessian eigenvalue density (SLQ), smallest vs largest batch")
    return fig


def _log_log_panel(ax, final: pd.DataFrame, key: str, color: str, *, legend: str, ylabel: str) -> None:
    """`key` per batch size on log axes: geometric means and intervals, which stay positive where arithmetic
    ones of two or three seeds would reach below zero."""
    batch_sizes = sorted(final.batch_size.unique())
    geometric = [geometric_interval(values) for _, values in final.groupby("batch_size")[key]]
    plot_intervals(ax, batch_sizes, geometric, fmt="-D", color=color, label=legend, linewidth=2)
    ax.set(xscale="log", yscale="log", xlabel="batch size (log scale)", ylabel=ylabel)
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes], rotation=45, fontsize=8)
    ax.minorticks_off()
    ax.legend(fontsize=7)


def _curvature_figure(final: pd.DataFrame, n_seeds: int, updates: str, image_set: str):
    """λ_max and trace of the Hessian on the sharpness subset, each on its own log axis, so with geometric
    means and intervals (an arithmetic interval of two positive values easily reaches below zero)."""
    fig, axes = subplots(1, 2, width=6.2, height=3.8)
    for ax, key, label, color in ((axes[0], "lambda_max", "λ_max (Lanczos)", "tab:red"),
                                  (axes[1], "hessian_trace", "trace (Hutchinson)", "tab:purple")):
        _log_log_panel(ax, final, key, color, legend=f"{label}, geometric",
                       ylabel=f"Hessian {label.split(' ')[0]} of the training cross-entropy")
        ax.set_title(f"Hessian {label}")
    fig.suptitle(f"{image_set} MLP: Hessian at the final weights on the sharpness subset, {seeds_text(n_seeds)} "
                 f"each; same epochs for every batch size (updates: {updates})", fontsize=9)
    return fig


def claims(reader: StoreReader, parent: Run) -> list[Claim]:
    """Per replicate, the trend of a measure against log10 of the batch size; the claim is on its mean."""
    children = reader.children(parent)
    final = _final_values(children)

    def along_batch_size(key: str, arm: pd.DataFrame = final) -> dict[int, tuple[list[float], list[float]]]:
        return {int(index): (rows.batch_size.tolist(), rows[key].tolist())
                for index, rows in arm.groupby(PARAM_REPLICATE)}

    found = [
        trend_over_seeds("part1_3c_ii.sharpness_grows_with_batch_size",
                         "Sharpness φ_ε (ε = 1e-3, Keskar et al. 2017) grows with the batch size.",
                         along_batch_size(SHARPNESS_CLAIMED), SHARPNESS_CLAIMED, "batch size"),
        trend_over_seeds("part1_3c_ii.lambda_max_grows_with_batch_size",
                         "The Hessian's largest eigenvalue λ_max on the training subset grows with the batch size "
                         "(at equal epochs, so with fewer updates).", along_batch_size("lambda_max"), "lambda_max",
                         "batch size"),
        trend_over_seeds("part1_3c_ii.sensitivity_falls_with_batch_size",
                         "Sensitivity (mean Frobenius norm of the softmax's input Jacobian on the test set) falls as "
                         "the batch size grows.", along_batch_size("sensitivity"), "sensitivity", "batch size",
                         direction=-1),
    ]
    equal = _final_values(children, EQUAL_UPDATES)
    if not equal.empty:
        found += [
            trend_over_seeds("part1_3c_ii.sharpness_grows_with_batch_size_at_equal_updates",
                             "At equal updates for every batch size, sharpness φ_ε (ε = 1e-3) grows with the batch "
                             "size.", along_batch_size(SHARPNESS_CLAIMED, equal), SHARPNESS_CLAIMED, "batch size"),
            trend_over_seeds("part1_3c_ii.lambda_max_grows_with_batch_size_at_equal_updates",
                             "At equal updates for every batch size, the Hessian's λ_max grows with the batch size.",
                             along_batch_size("lambda_max", equal), "lambda_max", "batch size"),
        ]
    return found
