"""part1_3c_i figure: loss and accuracy along the line from the batch-64 to the batch-1000 solution."""

from __future__ import annotations

import pandas as pd
from mlflow.entities import Run

from hw1track.reporting.plotting import subplots
from hw1track.tracking.query import StoreReader

LOSS_COLOR, ACCURACY_COLOR = "tab:blue", "tab:red"


def figures(reader: StoreReader, parent: Run) -> dict:
    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    endpoints = sorted(reader.children(parent), key=lambda run: float(run.data.params["interpolation_alpha"]))

    fig, loss_ax = subplots(width=7.5, height=4.5)
    accuracy_ax = loss_ax.twinx()
    for split, linestyle in (("train", "-"), ("test", "--")):
        loss_ax.plot(curve.alpha, curve[f"{split}_loss"], color=LOSS_COLOR, linestyle=linestyle,
                     label=f"{split} cross-entropy")
        accuracy_ax.plot(curve.alpha, curve[f"{split}_acc"], color=ACCURACY_COLOR, linestyle=linestyle,
                         label=f"{split} accuracy")
    for run in endpoints:
        alpha = float(run.data.params["interpolation_alpha"])
        metrics = run.data.metrics
        loss_ax.axvline(alpha, color="grey", linestyle=":", linewidth=1)
        # the trained model's own final metrics: the curve must pass through them
        loss_ax.plot([alpha] * 2, [metrics["train_loss"], metrics["test_loss"]], "o", color=LOSS_COLOR,
                     markerfacecolor="none")
        accuracy_ax.plot([alpha] * 2, [metrics["train_acc"], metrics["test_acc"]], "o", color=ACCURACY_COLOR,
                         markerfacecolor="none")
    endpoint_axis = loss_ax.secondary_xaxis("top")
    endpoint_axis.set_xticks([float(run.data.params["interpolation_alpha"]) for run in endpoints],
                             [f"batch {run.data.params['batch_size']}" for run in endpoints], fontsize=8)
    loss_ax.set(yscale="log", xlabel="α   (θ(α) = (1−α)·θ₁ + α·θ₂)", ylabel="cross-entropy (log scale)",
                title=f"Linear interpolation from θ₁ (batch {endpoints[0].data.params['batch_size']}) "
                      f"to θ₂ (batch {endpoints[-1].data.params['batch_size']}), MNIST")
    loss_ax.yaxis.label.set_color(LOSS_COLOR)
    accuracy_ax.set_ylabel("accuracy (fraction)", color=ACCURACY_COLOR)
    accuracy_ax.set_ylim(0, 1.02)
    accuracy_ax.grid(False)
    lines = loss_ax.get_legend_handles_labels()[0] + accuracy_ax.get_legend_handles_labels()[0]
    # Below the axes: inside, any corner hides part of a curve for some pair of models.
    fig.legend(lines, [line.get_label() for line in lines], loc="outside lower center", ncol=4,
               title="solid: train, dashed: test; ○ trained models")
    return {"interpolation": fig}
