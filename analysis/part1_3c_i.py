"""part1_3c_i figure and claims: loss and accuracy along the line from the batch-64 to the batch-1000 solution.

`interpolation.csv` holds one curve per replicate (column `replicate`), each
between the two models of that replicate, which share their initial weights.
The claims compare each curve with its own endpoints before averaging over
replicates: how high a seed's curve lies overall is not what they ask.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.entities import Run
from scipy import stats

from hw1track.reporting.plotting import plot_band, seeds_text, subplots
from hw1track.stats.claims import Claim, mean_above
from hw1track.stats.intervals import CONFIDENCE
from hw1track.tracking.names import PARAM_REPLICATE
from hw1track.tracking.query import StoreReader

LOSS_COLOR, ACCURACY_COLOR = "tab:blue", "tab:red"
CURVE_METRICS = ["train_loss", "test_loss", "train_acc", "test_acc"]
ENDPOINT_TOLERANCE = 1e-9  # α = 0 and α = 1 are on the grid exactly (`alpha_grid`); this only guards the CSV's text


def _curves(reader: StoreReader, parent: Run) -> pd.DataFrame:
    """The interpolation curves, one per replicate; a file written before replicates existed is replicate 0."""
    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    if PARAM_REPLICATE not in curve.columns:
        curve[PARAM_REPLICATE] = 0
    return curve


def figures(reader: StoreReader, parent: Run) -> dict:
    curve = _curves(reader, parent)
    replicates = sorted(curve[PARAM_REPLICATE].unique())
    n_seeds = len(replicates)
    # plot_band reads metric histories: here the "step" is α and each replicate's curve is one "run"
    history = (curve.melt(id_vars=["alpha", PARAM_REPLICATE], value_vars=CURVE_METRICS, var_name="key")
               .rename(columns={"alpha": "step", PARAM_REPLICATE: "run_id"}))
    endpoints = sorted(reader.children(parent), key=lambda run: float(run.data.params["interpolation_alpha"]))
    batch_at = {float(run.data.params["interpolation_alpha"]): run.data.params["batch_size"] for run in endpoints}

    fig, loss_ax = subplots(width=7.5, height=4.5 if n_seeds == 1 else 5.0)
    accuracy_ax = loss_ax.twinx()
    for split, linestyle in (("train", "-"), ("test", "--")):
        for ax, metric, color, what in ((loss_ax, "loss", LOSS_COLOR, "cross-entropy"),
                                        (accuracy_ax, "acc", ACCURACY_COLOR, "accuracy")):
            plot_band(ax, history, f"{split}_{metric}", replicates, color=color, linestyle=linestyle,
                      label=f"{split} {what}", log=metric == "loss", thin=True)
            if split == "test" and n_seeds > 1:  # train and test bands overlap: the test one only outlined
                band = ax.collections[-1]
                band.set(facecolor="none", edgecolor=color, linestyle=":", linewidth=1.0, alpha=0.7)
    for alpha in batch_at:
        loss_ax.axvline(alpha, color="grey", linestyle=":", linewidth=1)
    for run in endpoints:
        alpha = float(run.data.params["interpolation_alpha"])
        metrics = run.data.metrics
        # the trained model's own final metrics: its replicate's curve must pass through them
        loss_ax.plot([alpha] * 2, [metrics["train_loss"], metrics["test_loss"]], "o", color=LOSS_COLOR,
                     markerfacecolor="none")
        accuracy_ax.plot([alpha] * 2, [metrics["train_acc"], metrics["test_acc"]], "o", color=ACCURACY_COLOR,
                         markerfacecolor="none")
    endpoint_axis = loss_ax.secondary_xaxis("top")
    endpoint_axis.set_xticks(list(batch_at), [f"batch {batch}" for batch in batch_at.values()], fontsize=8)
    first, last = batch_at[min(batch_at)], batch_at[max(batch_at)]
    loss_ax.set(yscale="log", xlabel="α   (θ(α) = (1−α)·θ₁ + α·θ₂)", ylabel="cross-entropy (log scale)",
                title=f"Linear interpolation from θ₁ (batch {first}) to θ₂ (batch {last}), MNIST, "
                      f"{seeds_text(n_seeds)}")
    loss_ax.yaxis.label.set_color(LOSS_COLOR)
    accuracy_ax.set_ylabel("accuracy (fraction)", color=ACCURACY_COLOR)
    accuracy_ax.set_ylim(0, 1.02)
    accuracy_ax.grid(False)
    lines = loss_ax.get_legend_handles_labels()[0] + accuracy_ax.get_legend_handles_labels()[0]
    key = "solid: train, dashed: test; ○ trained models"
    if n_seeds > 1:
        key += f"\nthin lines: single seeds; bands: {CONFIDENCE:.0%} CI (train filled, test dotted outline)"
    # Below the axes: inside, any corner hides part of a curve for some pair of models.
    fig.legend(lines, [line.get_label() for line in lines], loc="outside lower center", ncol=4 if n_seeds == 1 else 2,
               title=key)
    return {"interpolation": fig}


def claims(reader: StoreReader, parent: Run) -> list[Claim]:
    """Per replicate, the train loss away from the two solutions minus the loss at them; claims on the mean."""
    curve = _curves(reader, parent)
    low_end, high_end = float(curve.alpha.min()), float(curve.alpha.max())
    between, beyond = {}, {}
    for index, rows in curve.groupby(PARAM_REPLICATE):
        rows = rows.sort_values("alpha")
        alpha, loss = rows.alpha.to_numpy(), rows.train_loss.to_numpy()
        at_first = loss[np.abs(alpha) <= ENDPOINT_TOLERANCE][0]
        at_second = loss[np.abs(alpha - 1) <= ENDPOINT_TOLERANCE][0]
        inside = loss[(alpha > ENDPOINT_TOLERANCE) & (alpha < 1 - ENDPOINT_TOLERANCE)]
        if len(inside):
            between[int(index)] = float(inside.max() - max(at_first, at_second))
        if alpha[0] < 0 and alpha[-1] > 1:
            beyond[int(index)] = float(min(loss[0] - at_first, loss[-1] - at_second))
    beyond_detail = ("" if low_end < 0 and high_end > 1
                     else f"the grid α ∈ [{low_end:g}, {high_end:g}] does not reach past both solutions")
    return [
        mean_above("part1_3c_i.loss_rises_between",
                   "Between the two solutions the training loss rises above both: the largest train cross-entropy "
                   "over 0 < α < 1 exceeds the larger of the two endpoints'.",
                   list(between.values()), "max train loss over 0<α<1 − larger endpoint loss (nats)",
                   detail=_detail(between)),
        mean_above("part1_3c_i.loss_rises_beyond",
                   f"Beyond both solutions the training loss rises: at the grid's ends (α = {low_end:g} and "
                   f"α = {high_end:g}) the train cross-entropy exceeds that at the nearer solution (α = 0, α = 1).",
                   list(beyond.values()),
                   f"smaller of L({low_end:g}) − L(0) and L({high_end:g}) − L(1), train loss (nats)",
                   detail="; ".join(part for part in (beyond_detail, _detail(beyond)) if part)),
    ]


def _detail(per_seed: dict[int, float]) -> str:
    """Each replicate's value and the interval the verdict reads."""
    values = list(per_seed.values())
    listed = "per replicate: " + ", ".join(f"replicate {index}: {value:.3g}" for index, value in per_seed.items())
    if len(values) < 2:
        return listed  # `mean_above` says the claim rests on one seed
    factor = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1)
    spread = ("the seeds agree exactly, so the Student t interval has zero width" if np.ptp(values) == 0 else
              f"{CONFIDENCE:.0%} Student t interval over {len(values)} seeds (mean ± {factor:.3g} standard errors)")
    return f"{listed}; {spread}"
