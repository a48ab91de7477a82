"""part1_1a figures: loss curves and predictions of the deep, middle and shallow fits, per target."""

from __future__ import annotations

import pandas as pd
from mlflow.entities import Run

from hw1track.reporting.plotting import plot_curves, run_colors, subplots
from hw1track.tracking.names import TAG_STUCK
from hw1track.tracking.query import StoreReader


def _label(run: Run) -> str:
    params = run.data.params
    stuck = " (stuck)" if run.data.tags.get(TAG_STUCK) == "true" else ""
    return f"{params['model']} {params['widths']}, P={params['n_params']}{stuck}"


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    history = reader.history(children, ["train_loss"])
    figures = {}
    for target in dict.fromkeys(run.data.params["target"] for run in children):
        runs = [run for run in children if run.data.params["target"] == target]
        labels = {run.info.run_id: _label(run) for run in runs}
        colors = run_colors(labels)

        fig, ax = subplots()
        plot_curves(ax, history, "train_loss", labels, colors=colors)
        ax.set(yscale="log", xlabel="epoch", ylabel="training MSE (log scale)",
               title=f"Training loss on {target}, full-batch Adam")
        ax.legend()
        figures[f"loss_{target}"] = fig

        fig, ax = subplots()
        for i, run in enumerate(runs):
            grid = pd.read_csv(reader.download(run, "predictions.csv"))
            if i == 0:
                ax.plot(grid.x, grid.y_true, color="black", linewidth=2.5, label="ground truth")
            ax.plot(grid.x, grid.y_pred, color=colors[run.info.run_id], linewidth=1.2, label=_label(run))
        ax.set(xlabel="x", ylabel="f(x)", title=f"Predictions after training on {target}")
        ax.legend()
        figures[f"predictions_{target}"] = fig
    return figures
