"""part1_2c figures and claim: minimal ratio vs loss at the end of phase 2, one point per training.

Colour is the final ‖∇L‖ on a log scale, so a point's distance from being a
critical point is visible next to its curvature; trainings that stopped below
the threshold are circles, the others (step cap reached) triangles, and nets
whose ReLUs all died (constant output) red crosses. Every training of every
replicate is one more seed of the same net, so all of them share one scatter.
A collapsed net sits at a degenerate critical point of its own (zero gradient,
loss = Var(y)) whatever its curvature, so it is counted, per replicate, and
left out of the correlation between minimal ratio and loss.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from mlflow.entities import Run

from hw1track.reporting.plotting import seeds_text, subplots
from hw1track.stats.claims import Claim, correlation
from hw1track.stats.intervals import CONFIDENCE
from hw1track.tracking.names import PARAM_REPLICATE, TAG_STUCK
from hw1track.tracking.query import StoreReader, runs_frame

REACHED, CAPPED, COLLAPSED = "o", "^", "X"


def collapsed_mask(frame: pd.DataFrame) -> pd.Series:
    """Trainings whose net collapsed to a constant (tag `hw1track.stuck`), one flag per row of a `runs_frame`."""
    column = f"tags.{TAG_STUCK}"
    return frame[column] == "true" if column in frame else pd.Series(False, index=frame.index)


def replicate_column(frame: pd.DataFrame) -> pd.Series:
    """Each row's replicate (0 for runs made before replicates existed)."""
    column = f"params.{PARAM_REPLICATE}"
    return frame[column].fillna(0).astype(int) if column in frame else pd.Series(0, index=frame.index)


def collapsed_text(frame: pd.DataFrame, separator: str = " ") -> str:
    """'3 of 40 trainings collapsed to a constant (replicate 0: 2 of 20, replicate 1: 1 of 20)', per replicate."""
    collapsed, replicates = collapsed_mask(frame), replicate_column(frame)
    text = f"{int(collapsed.sum())} of {len(frame)} trainings collapsed to a constant"
    if replicates.nunique() > 1:
        counts = (f"replicate {r}: {int(collapsed[replicates == r].sum())} of {int((replicates == r).sum())}"
                  for r in sorted(replicates.unique()))
        text += f"{separator}({', '.join(counts)})"
    return text


def _correlation_text(frame: pd.DataFrame, ratio: str) -> str:
    live = frame[~collapsed_mask(frame)]
    claim = correlation("", "", live[f"metrics.{ratio}"], live["metrics.final_loss"], n_seeds=0)
    if math.isnan(claim.effect):
        return f"Spearman ρ undefined over the {len(live)} live trainings"
    return (f"Spearman ρ = {claim.effect:.2f} ({CONFIDENCE:.0%} CI {claim.ci_low:.2f} to {claim.ci_high:.2f}) "
            f"over the {len(live)} trainings that did not collapse")


def _scatter(frame, ratio: str, xlabel: str, title: str, threshold: float):
    replicates = replicate_column(frame).nunique()
    fig, ax = subplots(width=7.0 if replicates == 1 else 7.6, height=4.8 if replicates == 1 else 5.2)
    collapsed = collapsed_mask(frame)
    reached = (frame["metrics.reached_grad_norm_threshold"] > 0.5) & ~collapsed
    capped = ~reached & ~collapsed
    # The colour scale spans the trainings that fit something; a collapsed net's ‖∇L‖ ≈ 1e-16 would flatten it.
    norms = frame.loc[~collapsed, "metrics.final_grad_norm"]
    norm = LogNorm(vmin=norms.min(), vmax=norms.max()) if len(norms) else None
    drawn = None
    for mask, marker in ((reached, REACHED), (capped, CAPPED)):
        points = frame[mask]
        drawn = ax.scatter(points[f"metrics.{ratio}"], points["metrics.final_loss"],
                           c=points["metrics.final_grad_norm"], norm=norm, cmap="viridis", marker=marker,
                           s=36, edgecolors="black", linewidths=0.4)
    stuck = frame[collapsed]
    ax.scatter(stuck[f"metrics.{ratio}"], stuck["metrics.final_loss"], marker=COLLAPSED, color="tab:red", s=60)
    colorbar = fig.colorbar(drawn, ax=ax)
    colorbar.set_label("final gradient norm ‖∇L‖ (log scale)")
    colorbar.ax.axhline(threshold, color="red", linewidth=1.5)
    if replicates > 1:
        title = f"{title}\n{_correlation_text(frame, ratio)}"
        dead = "dead ReLUs, left out of ρ: " + collapsed_text(frame, separator="\n")
    else:
        dead = f"collapsed to a constant, dead ReLUs ({int(collapsed.sum())})"
    ax.set(yscale="log", xlabel=xlabel, ylabel="final training MSE (log scale)", title=title)
    handles = [
        Line2D([], [], linestyle="", marker=REACHED, color="grey",
               label=f"‖∇L‖ < {threshold:g} reached ({int(reached.sum())})"),
        Line2D([], [], linestyle="", marker=CAPPED, color="grey", label=f"step cap hit first ({int(capped.sum())})"),
        Line2D([], [], linestyle="", marker=COLLAPSED, color="tab:red", label=dead),
        Line2D([], [], color="red", label=f"threshold {threshold:g} (on the colour bar)"),
    ]
    if replicates == 1:
        ax.legend(handles=handles, loc="best")
    else:  # a longer legend: below the axes, where it hides no point
        fig.legend(handles=handles, loc="outside lower center", ncol=2)
    return fig


def _training_curves(reader: StoreReader, children: list[Run], recipe: dict, phase2_start: float, trainings: str):
    history = reader.history(children, ["loss", "grad_norm"])
    fig, (top, bottom) = subplots(2, 1, width=8.0, height=3.2, sharex=True)
    for axis, key, label in ((top, "loss", "training MSE"), (bottom, "grad_norm", "gradient norm ‖∇L‖")):
        for _, series in history[history.key == key].groupby("run_id"):
            axis.plot(series.step, series.value, color="tab:blue", linewidth=0.6, alpha=0.35)
        axis.axvline(phase2_start, color="black", linestyle="--", linewidth=1, label="phase 2 starts")
        axis.set(yscale="log", ylabel=f"{label} (log scale)")
    bottom.axhline(float(recipe["grad_norm_threshold"]), color="red", linewidth=1,
                   label=f"threshold {float(recipe['grad_norm_threshold']):g}")
    bottom.set(xlabel="iteration (phase 1: Adam on the MSE; phase 2: Adam on ‖∇L‖²)")
    # the replicates' longer count would push the title past the figure's edge on one line
    separator = ": " if replicate_column(runs_frame(children)).nunique() == 1 else "\n"
    top.set(title=f"{trainings} of DNN {recipe['widths']} (P={recipe['n_params']}) on sinc{separator}"
                  f"every {_spacing(history)} iteration(s) shown")
    top.legend(loc="upper right")
    bottom.legend(loc="upper right")
    return fig


def _spacing(history) -> int:
    steps = np.sort(history.step.unique())
    return int(np.median(np.diff(steps))) if len(steps) > 1 else 1


def trainings_text(frame: pd.DataFrame) -> str:
    """'40 trainings (20 per replicate × 2 seeds)'; just '20 trainings' with one replicate, as ever."""
    replicates = replicate_column(frame).nunique()
    if replicates == 1:
        return f"{len(frame)} trainings"
    return f"{len(frame)} trainings ({len(frame) // replicates} per replicate × {seeds_text(replicates)})"


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    frame = runs_frame(children)
    recipe = children[0].data.params
    threshold = float(recipe["grad_norm_threshold"])
    trainings = trainings_text(frame)
    model = f"{trainings} of DNN {recipe['widths']} (P={recipe['n_params']}) on sinc"
    tolerance = float(recipe["zero_tolerance"])
    return {
        "minimal_ratio_vs_loss": _scatter(
            frame, "minimal_ratio", "minimal ratio: fraction of Hessian eigenvalues > 0",
            f"Minimal ratio vs loss after phase 2\n{model}", threshold),
        "minimal_ratio_tol_vs_loss": _scatter(
            frame, "minimal_ratio_tol",
            f"fraction of eigenvalues > 0 among those with |λ| > {tolerance:g}·max|λ|",
            f"Minimal ratio ignoring near-zero eigenvalues vs loss\n{model}", threshold),
        "training_curves": _training_curves(reader, children, recipe,
                                            frame["metrics.phase2_start_step"].iloc[0], trainings),
    }


def claims(reader: StoreReader, parent: Run) -> list[Claim]:
    """Near a critical point, more positive curvature goes with a lower loss (the homework's expected trend)."""
    frame = runs_frame(reader.children(parent))
    if frame.empty:
        return []
    live = frame[~collapsed_mask(frame)]
    reached = int((live["metrics.reached_grad_norm_threshold"] > 0.5).sum())
    threshold = float(frame["params.grad_norm_threshold"].iloc[0])
    return [correlation(
        "part1_2c.minimal_ratio_vs_loss",
        "At the end of phase 2 (‖∇L‖ driven towards 0), trainings with a larger minimal ratio (fraction of "
        "positive Hessian eigenvalues) end at a lower loss: ρ(minimal ratio, final loss) < 0.",
        live["metrics.minimal_ratio"], live["metrics.final_loss"], n_seeds=int(replicate_column(frame).nunique()),
        direction=-1,
        detail=f"{collapsed_text(frame)}: dead ReLUs, left out; "
               f"{reached} of the {len(live)} live trainings reached ‖∇L‖ < {threshold:g}, "
               "the rest stopped at the step cap")]
