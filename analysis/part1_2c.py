"""part1_2c figures: minimal ratio vs loss at the end of phase 2, one point per training.

Colour is the final ‖∇L‖ on a log scale, so a point's distance from being a
critical point is visible next to its curvature; trainings that stopped below
the threshold are circles, the others (step cap reached) triangles, and nets
whose ReLUs all died (constant output) red crosses.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from mlflow.entities import Run

from hw1track.reporting.plotting import subplots
from hw1track.tracking.names import TAG_STUCK
from hw1track.tracking.query import StoreReader, runs_frame

REACHED, CAPPED, COLLAPSED = "o", "^", "X"


def _scatter(frame, ratio: str, xlabel: str, title: str, threshold: float):
    fig, ax = subplots(width=7.0, height=4.8)
    collapsed = frame[f"tags.{TAG_STUCK}"] == "true"
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
    ax.set(yscale="log", xlabel=xlabel, ylabel="final training MSE (log scale)", title=title)
    ax.legend(handles=[
        Line2D([], [], linestyle="", marker=REACHED, color="grey",
               label=f"‖∇L‖ < {threshold:g} reached ({int(reached.sum())})"),
        Line2D([], [], linestyle="", marker=CAPPED, color="grey", label=f"step cap hit first ({int(capped.sum())})"),
        Line2D([], [], linestyle="", marker=COLLAPSED, color="tab:red",
               label=f"collapsed to a constant, dead ReLUs ({int(collapsed.sum())})"),
        Line2D([], [], color="red", label=f"threshold {threshold:g} (on the colour bar)"),
    ], loc="best")
    return fig


def _training_curves(reader: StoreReader, children: list[Run], recipe: dict, phase2_start: float):
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
    top.set(title=f"{len(children)} trainings of DNN {recipe['widths']} (P={recipe['n_params']}) on sinc: "
                  f"every {_spacing(history)} iteration(s) shown")
    top.legend(loc="upper right")
    bottom.legend(loc="upper right")
    return fig


def _spacing(history) -> int:
    steps = np.sort(history.step.unique())
    return int(np.median(np.diff(steps))) if len(steps) > 1 else 1


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    frame = runs_frame(children)
    recipe = children[0].data.params
    threshold = float(recipe["grad_norm_threshold"])
    model = f"{len(frame)} trainings of DNN {recipe['widths']} (P={recipe['n_params']}) on sinc"
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
                                            frame["metrics.phase2_start_step"].iloc[0]),
    }
