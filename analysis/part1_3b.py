"""part1_3b figures and claims: final train and test loss and accuracy against the number of parameters.

Models trained to the stopping rule get a third figure, the epoch each width
stopped at: it shows which widths the rule (rather than the cap) stopped, and
so whether "final" means the same thing for a small model and a large one.

A run's latest metric in MLflow is its value at the highest step, i.e. the last
epoch's full-set evaluation, so no metric history is read. The replicates of one
width are one point with its 95 % interval. The claims measure the trend over
the widths within each replicate first and only then average over replicates:
a seed that lifts every width alike must not blur a trend every seed shows.
"""

from __future__ import annotations


from matplotlib.figure import Figure
from mlflow.entities import Run

from hw1track.reporting.plotting import (bounded_interval, dataset_title, geometric_interval, plot_intervals,
                                         seeds_text, subplots)
from hw1track.stats.claims import Claim, trend_over_seeds
from hw1track.tracking.names import METRIC_EPOCHS_TRAINED, METRIC_STOPPED_BY_RULE
from hw1track.tracking.query import StoreReader, by_group, replicate

SPLITS = {"train": ("o-", "tab:blue"), "test": ("s--", "tab:orange")}
# With error bars, train and test of one P sit this factor left and right of it, so that their bars do not overlap.
DODGE = {"train": 10 ** -0.015, "test": 10 ** 0.015}


def _widths(children: list[Run]) -> list[list[Run]]:
    """The replicates of each width, narrowest model first."""
    return sorted(by_group(children).values(), key=lambda runs: int(runs[0].data.params["n_params"]))


def figures(reader: StoreReader, parent: Run) -> dict:
    groups = _widths(reader.children(parent))
    sizes = [int(runs[0].data.params["n_params"]) for runs in groups]
    widths = [runs[0].data.params["width"] for runs in groups]
    n_seeds = max(len(runs) for runs in groups)
    first = groups[0][0].data.params
    recipe = (f"CNN conv {first['channels']} + one dense layer; Adam {first['lr']}, batch {first['batch_size']}, "
              f"{first['n_train']} training images\n{_budget(first)}")
    figures = {}
    for metric, axis_label, scale in (("loss", "cross-entropy", "log"), ("acc", "accuracy", "linear")):
        fig, ax = subplots(width=8.0, height=4.8)
        for split, (style, color) in SPLITS.items():
            values = [[run.data.metrics[f"{split}_{metric}"] for run in runs] for runs in groups]
            # a log axis cannot draw an arithmetic interval that reaches below zero
            intervals = [geometric_interval(v) if scale == "log" else bounded_interval(v, 0.0, 1.0) for v in values]
            x = [size * DODGE[split] for size in sizes] if n_seeds > 1 else sizes
            plot_intervals(ax, x, intervals, fmt=style, color=color, label=split)
        unit = " (log scale)" if scale == "log" else " (fraction)"
        if n_seeds > 1 and scale == "log":
            unit += ", geometric mean"
        ax.set(xscale="log", yscale=scale, xlabel="number of parameters P (log scale)",
               ylabel=f"{axis_label} at the last epoch{unit}",
               title=f"{dataset_title(parent)} {axis_label} vs model size, {seeds_text(n_seeds)} per width\n{recipe}")
        _label_widths(ax, sizes, widths)
        ax.legend(title="full-set evaluation")
        figures["loss_vs_params" if metric == "loss" else "accuracy_vs_params"] = fig
    if all(METRIC_EPOCHS_TRAINED in run.data.metrics for runs in groups for run in runs):
        figures["epochs_vs_params"] = _stopping_epochs(groups, sizes, widths, n_seeds, first, dataset_title(parent))
    return figures


def _budget(params) -> str:
    """The training length the params describe: a stopping rule with its cap, or a fixed number of epochs."""
    if int(params.get("plateau_window", 0)) > 0:
        return (f"until train loss levels off: gains < {float(params['plateau_fraction']):g} × initial over "
                f"{params['plateau_window']} epochs, within that of its best (cap {params['epochs']})")
    return f"{params['epochs']} epochs"


def _stopping_epochs(groups: list[list[Run]], sizes: list[int], widths: list[str], n_seeds: int, first,
                     image_set: str) -> Figure:
    """Each model's last trained epoch against P: filled where the rule stopped it, hollow where the cap did."""
    fig, ax = subplots(width=8.0, height=4.2)
    for runs, size in zip(groups, sizes):
        for run in runs:
            by_rule = run.data.metrics[METRIC_STOPPED_BY_RULE] > 0
            ax.plot(size, run.data.metrics[METRIC_EPOCHS_TRAINED], "o", color="tab:blue",
                    markerfacecolor="tab:blue" if by_rule else "none", alpha=0.8)
    cap = int(first["epochs"])
    ax.axhline(cap, color="grey", linestyle="--", linewidth=1)
    ax.plot([], [], "o", color="tab:blue", label="stopped by the rule")
    ax.plot([], [], "o", color="tab:blue", markerfacecolor="none", label="stopped by the cap")
    ax.plot([], [], "--", color="grey", label=f"cap ({cap} epochs)")
    ax.set(xscale="log", ylim=(0, cap * 1.08), xlabel="number of parameters P (log scale)",
           ylabel="epochs trained",
           title=f"{image_set}: where each width stopped, {seeds_text(n_seeds)} per width (one marker per seed)\n"
                 f"{_budget(first)}")
    _label_widths(ax, sizes, widths)
    ax.legend(loc="lower right")
    return fig


def _label_widths(ax, sizes: list[int], widths: list[str]) -> None:
    """The dense width of each model on a top axis, above its P."""
    top = ax.secondary_xaxis("top")
    top.set_xticks(sizes, widths, fontsize=7)
    top.minorticks_off()
    top.set_xlabel("dense width (units)")


def claims(reader: StoreReader, parent: Run) -> list[Claim]:
    """Per replicate, the trend of a final quantity over the widths against log10 P; the claim is on its mean."""
    per_replicate: dict[int, list[Run]] = {}
    for run in reader.children(parent):
        per_replicate.setdefault(replicate(run), []).append(run)

    def along_params(quantity) -> dict[int, tuple[list[float], list[float]]]:
        return {index: ([int(run.data.params["n_params"]) for run in runs], [quantity(run) for run in runs])
                for index, runs in per_replicate.items()}

    return [
        trend_over_seeds("part1_3b.test_acc_rises_with_params",
                         "Test accuracy at the last epoch rises with the number of parameters P.",
                         along_params(lambda run: run.data.metrics["test_acc"]), "test accuracy", "P"),
        trend_over_seeds("part1_3b.generalisation_gap_grows_with_params",
                         "The generalisation gap, test minus train cross-entropy at the last epoch, grows with P.",
                         along_params(lambda run: run.data.metrics["test_loss"] - run.data.metrics["train_loss"]),
                         "test − train cross-entropy", "P"),
    ]
