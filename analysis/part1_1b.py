"""part1_1b figures: train and test loss and accuracy per epoch for the 1-, 2- and 3-conv CNNs."""

from __future__ import annotations

from mlflow.entities import Run

from hw1track.reporting.plotting import plot_curves, run_colors, subplots
from hw1track.tracking.query import StoreReader


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    history = reader.history(children, ["train_loss", "test_loss", "train_acc", "test_acc"])
    labels = {run.info.run_id: f"{run.data.params['model']} ({run.data.params['conv_layers']} conv, "
                               f"P={run.data.params['n_params']})" for run in children}
    colors = run_colors(labels)
    figures = {}
    for metric, axis_label, scale in (("loss", "cross-entropy", "log"), ("acc", "accuracy", "linear")):
        fig, ax = subplots()
        plot_curves(ax, history, f"train_{metric}", labels, colors=colors, suffix=" train")
        plot_curves(ax, history, f"test_{metric}", labels, colors=colors, linestyle="--", suffix=" test")
        ax.set(xlabel="epoch", ylabel=axis_label, yscale=scale,
               title=f"MNIST {axis_label} per epoch (train solid, test dashed)")
        ax.legend(ncol=2)
        figures["loss" if metric == "loss" else "accuracy"] = fig
    return figures
