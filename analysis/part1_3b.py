"""part1_3b figures: final train and test loss and accuracy against the number of parameters.

A run's latest metric in MLflow is its value at the highest step, i.e. the last
epoch's full-set evaluation, so no metric history is read.
"""

from __future__ import annotations

from mlflow.entities import Run

from hw1track.reporting.plotting import subplots
from hw1track.tracking.query import StoreReader

SPLITS = {"train": ("o-", "tab:blue"), "test": ("s--", "tab:orange")}


def figures(reader: StoreReader, parent: Run) -> dict:
    children = sorted(reader.children(parent), key=lambda run: int(run.data.params["n_params"]))
    sizes = [int(run.data.params["n_params"]) for run in children]
    widths = [run.data.params["width"] for run in children]
    first = children[0].data.params
    recipe = (f"CNN conv {first['channels']} + one dense layer; Adam {first['lr']}, batch {first['batch_size']}, "
              f"{first['epochs']} epochs on {first['n_train']} training images")
    figures = {}
    for metric, axis_label, scale in (("loss", "cross-entropy", "log"), ("acc", "accuracy", "linear")):
        fig, ax = subplots(width=8.0, height=4.8)
        for split, (style, color) in SPLITS.items():
            ax.plot(sizes, [run.data.metrics[f"{split}_{metric}"] for run in children], style, color=color,
                    label=split)
        ax.set(xscale="log", yscale=scale, xlabel="number of parameters P (log scale)",
               ylabel=f"{axis_label} at the last epoch{' (log scale)' if scale == 'log' else ''}",
               title=f"MNIST {axis_label} vs model size\n{recipe}")
        _label_widths(ax, sizes, widths)
        ax.legend(title="full-set evaluation")
        figures["loss_vs_params" if metric == "loss" else "accuracy_vs_params"] = fig
    return figures


def _label_widths(ax, sizes: list[int], widths: list[str]) -> None:
    """The dense width of each model on a top axis, above its P."""
    top = ax.secondary_xaxis("top")
    top.set_xticks(sizes, widths, fontsize=7)
    top.minorticks_off()
    top.set_xlabel("dense width (units)")
