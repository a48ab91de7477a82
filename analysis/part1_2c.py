"""part1_2c figures and claims: minimal ratio vs loss at the end of phase 2, one point per training, and whether
those ends are critical points at all.

Colour is the final ‖∇L‖ on a log scale, so a point's distance from being a
critical point is visible next to its curvature; trainings that stopped below
the threshold are circles, those whose Levenberg–Marquardt phase 2 stalled
squares, the others (step cap reached) triangles, and nets whose ReLUs all died
(constant output) red crosses. Every training of every replicate is one more
seed of the same net, so all of them share one scatter; each phase-2 method
(`phase2_method`; runs without it were Adam's) has its own. A collapsed net
sits at a degenerate critical point of its own (zero gradient, loss = Var(y))
whatever its curvature, so it is counted, per replicate, and left out of every
figure of the spectrum and of the correlation between minimal ratio and loss.

Most Hessian eigenvalues at these points are numerically zero, so the sign
count depends on where zero ends: `minimal_ratio_by_tolerance` draws the
minimal ratio against the tolerance τ for every training, `hessian_spectra` the
whole spectrum of three of them, and `gradient_null_space` how much of ‖∇L‖²
lies in the Hessian's near-null space: a small gradient the Hessian sees is a
critical point, one it does not see a gradient-flat point (Frye et al. 2021),
where minimising ‖∇L‖² stops without ∇L = 0.
"""

from __future__ import annotations

import functools
import math
import tempfile

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from mlflow.entities import Run
from scipy import stats

from hw1track.reporting.plotting import seeds_text, subplots
from hw1track.stats.claims import Claim, correlation, directional, verdict
from hw1track.stats.intervals import CONFIDENCE, mean_interval
from hw1track.tracking.names import (HESSIAN_EIGENVALUES_ARTIFACT, PARAM_REPLICATE, SPECTRUM_BY_TOLERANCE_ARTIFACT,
                                     TAG_STUCK)
from hw1track.tracking.query import StoreReader, runs_frame

REACHED, STALLED, CAPPED, COLLAPSED = "o", "s", "^", "X"
ADAM, LEVENBERG_MARQUARDT = "adam", "levenberg_marquardt"
METHOD_LABELS = {ADAM: "Adam on ‖∇L‖²", LEVENBERG_MARQUARDT: "Levenberg–Marquardt on ∇L"}
METHOD_COLORS = {ADAM: "tab:blue", LEVENBERG_MARQUARDT: "tab:orange"}
# A point is gradient-flat when most of ‖∇L‖² lies where the Hessian sees nothing (|λ| ≤ tol·max|λ|).
GRADIENT_FLAT_SHARE = 0.5
# The tolerances the claim on τ compares: 1e-8 keeps all but the rounding noise of a float64 spectrum,
# 1e-4 is where the tolerance variant had reached 1.0 in the runs that raised the question.
LOW_TOLERANCE, HIGH_TOLERANCE = 1e-8, 1e-4


def collapsed_mask(frame: pd.DataFrame) -> pd.Series:
    """Trainings whose net collapsed to a constant (tag `hw1track.stuck`), one flag per row of a `runs_frame`."""
    column = f"tags.{TAG_STUCK}"
    return frame[column] == "true" if column in frame else pd.Series(False, index=frame.index)


def replicate_column(frame: pd.DataFrame) -> pd.Series:
    """Each row's replicate (0 for runs made before replicates existed)."""
    column = f"params.{PARAM_REPLICATE}"
    return frame[column].fillna(0).astype(int) if column in frame else pd.Series(0, index=frame.index)


def method_column(frame: pd.DataFrame) -> pd.Series:
    """Each row's phase-2 method (Adam for runs made before there was a choice)."""
    column = "params.phase2_method"
    return frame[column].fillna(ADAM) if column in frame else pd.Series(ADAM, index=frame.index)


def methods_in(frame: pd.DataFrame) -> list[str]:
    """The phase-2 methods of a `runs_frame`, Adam (the homework's) first."""
    found = set(method_column(frame))
    return [m for m in METHOD_LABELS if m in found] + sorted(found - set(METHOD_LABELS))


def _flag(frame: pd.DataFrame, metric: str) -> pd.Series:
    column = f"metrics.{metric}"
    return frame[column].fillna(0) > 0.5 if column in frame else pd.Series(False, index=frame.index)


def outcomes(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Per training, how its phase 2 ended: reached the threshold, stalled, step cap, or the net collapsed."""
    collapsed = collapsed_mask(frame)
    reached = _flag(frame, "reached_grad_norm_threshold") & ~collapsed
    stalled = _flag(frame, "phase2_stalled") & ~reached & ~collapsed
    return {"reached": reached, "stalled": stalled, "capped": ~(reached | stalled | collapsed),
            "collapsed": collapsed}


def collapsed_text(frame: pd.DataFrame, separator: str = " ") -> str:
    """'3 of 40 trainings collapsed to a constant (replicate 0: 2 of 20, replicate 1: 1 of 20)', per replicate."""
    collapsed, replicates = collapsed_mask(frame), replicate_column(frame)
    text = f"{int(collapsed.sum())} of {len(frame)} trainings collapsed to a constant"
    if replicates.nunique() > 1:
        counts = (f"replicate {r}: {int(collapsed[replicates == r].sum())} of {int((replicates == r).sum())}"
                  for r in sorted(replicates.unique()))
        text += f"{separator}({', '.join(counts)})"
    return text


def outcome_text(frame: pd.DataFrame, threshold: float) -> str:
    """'23 of 40 live trainings reached ‖∇L‖ < 0.0001, 13 stalled, 4 stopped at the step cap'."""
    ended = outcomes(frame)
    live = int((~ended["collapsed"]).sum())
    text = f"{int(ended['reached'].sum())} of {live} live trainings reached ‖∇L‖ < {threshold:g}"
    if ended["stalled"].any():
        text += f", {int(ended['stalled'].sum())} stalled"
    return text + f", {int(ended['capped'].sum())} stopped at the step cap"


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
    ended = outcomes(frame)
    # The colour scale spans the trainings that fit something; a collapsed net's ‖∇L‖ ≈ 1e-16 would flatten it.
    norms = frame.loc[~ended["collapsed"], "metrics.final_grad_norm"]
    norm = LogNorm(vmin=norms.min(), vmax=norms.max()) if len(norms) else None
    drawn = None
    for outcome, marker in (("reached", REACHED), ("stalled", STALLED), ("capped", CAPPED)):
        points = frame[ended[outcome]]
        drawn = ax.scatter(points[f"metrics.{ratio}"], points["metrics.final_loss"],
                           c=points["metrics.final_grad_norm"], norm=norm, cmap="viridis", marker=marker,
                           s=36, edgecolors="black", linewidths=0.4)
    stuck = frame[ended["collapsed"]]
    ax.scatter(stuck[f"metrics.{ratio}"], stuck["metrics.final_loss"], marker=COLLAPSED, color="tab:red", s=60)
    colorbar = fig.colorbar(drawn, ax=ax)
    colorbar.set_label("final gradient norm ‖∇L‖ (log scale)")
    colorbar.ax.axhline(threshold, color="red", linewidth=1.5)
    if replicates > 1:
        title = f"{title}\n{_correlation_text(frame, ratio)}"
        dead = "dead ReLUs, left out of ρ: " + collapsed_text(frame, separator="\n")
    else:
        dead = f"collapsed to a constant, dead ReLUs ({int(ended['collapsed'].sum())})"
    ax.set(yscale="log", xlabel=xlabel, ylabel="final training MSE (log scale)", title=title)
    handles = [Line2D([], [], linestyle="", marker=REACHED, color="grey",
                      label=f"‖∇L‖ < {threshold:g} reached ({int(ended['reached'].sum())})")]
    if ended["stalled"].any():
        handles.append(Line2D([], [], linestyle="", marker=STALLED, color="grey",
                              label=f"stalled: no step lowered ‖∇L‖ by 1 % ({int(ended['stalled'].sum())})"))
    handles += [
        Line2D([], [], linestyle="", marker=CAPPED, color="grey",
               label=f"step cap hit first ({int(ended['capped'].sum())})"),
        Line2D([], [], linestyle="", marker=COLLAPSED, color="tab:red", label=dead),
        Line2D([], [], color="red", label=f"threshold {threshold:g} (on the colour bar)"),
    ]
    if replicates == 1:
        ax.legend(handles=handles, loc="best")
    else:  # a longer legend: below the axes, where it hides no point
        fig.legend(handles=handles, loc="outside lower center", ncol=2)
    return fig


def _training_curves(reader: StoreReader, children: list[Run], frame: pd.DataFrame, trainings: str):
    history = reader.history(children, ["loss", "grad_norm"])
    method_of = dict(zip(frame["run_id"], method_column(frame)))
    recipe = children[0].data.params
    threshold = float(recipe["grad_norm_threshold"])
    fig, (top, bottom) = subplots(2, 1, width=8.0, height=3.2, sharex=True)
    for axis, key, label in ((top, "loss", "training MSE"), (bottom, "grad_norm", "gradient norm ‖∇L‖")):
        for run_id, series in history[history.key == key].groupby("run_id"):
            axis.plot(series.step, series.value, color=METHOD_COLORS.get(method_of[run_id], "tab:grey"),
                      linewidth=0.6, alpha=0.35)
        axis.axvline(frame["metrics.phase2_start_step"].iloc[0], color="black", linestyle="--", linewidth=1,
                     label="phase 2 starts")
        axis.set(yscale="log", ylabel=f"{label} (log scale)")
    bottom.axhline(threshold, color="red", linewidth=1, label=f"threshold {threshold:g}")
    methods = methods_in(frame)
    phase2 = ", ".join(METHOD_LABELS.get(m, m) for m in methods)
    bottom.set(xlabel=f"iteration (phase 1: Adam on the MSE; phase 2: {phase2})")
    if len(methods) > 1:
        bottom.legend(handles=[*bottom.get_legend_handles_labels()[0],
                               *(Line2D([], [], color=METHOD_COLORS.get(m, "tab:grey"), label=METHOD_LABELS.get(m, m))
                                 for m in methods)], loc="upper right")
    else:
        bottom.legend(loc="upper right")
    # one child per training and method: each phase 1 is drawn once per method, in that method's colour
    both = f"each with {len(methods)} phase-2 methods; " if len(methods) > 1 else ""
    # the replicates' longer count would push the title past the figure's edge on one line
    separator = ": " if replicate_column(frame).nunique() == 1 and not both else "\n"
    top.set(title=f"{trainings} of DNN {recipe['widths']} (P={recipe['n_params']}) on sinc{separator}"
                  f"{both}every {_spacing(history)} iteration(s) shown")
    top.legend(loc="upper right")
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


@functools.lru_cache(maxsize=4096)
def _tolerance_table(reader: StoreReader, run_id: str) -> pd.DataFrame:
    """A child's `spectrum_by_tolerance.csv`, read once for both the figures and the claims."""
    with tempfile.TemporaryDirectory(prefix="hw1track-") as folder:
        path = reader.client.download_artifacts(run_id, SPECTRUM_BY_TOLERANCE_ARTIFACT, folder)
        return pd.read_csv(path)


def tolerance_tables(reader: StoreReader, frame: pd.DataFrame) -> pd.DataFrame:
    """Every live training's minimal ratio and null share per τ, one row per (run, τ); empty for older runs."""
    live = frame[~collapsed_mask(frame)]
    if live.empty or "metrics.grad_null_fraction" not in live:
        return pd.DataFrame(columns=["run_id", "method", "tolerance", "minimal_ratio_tol", "grad_null_fraction"])
    tables = [_tolerance_table(reader, run_id).assign(run_id=run_id, method=method)
              for run_id, method in zip(live["run_id"], method_column(live))]
    return pd.concat(tables, ignore_index=True)


def _at_tolerance(tables: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """The rows of the grid point nearest `tolerance` (on a log scale), one per run."""
    grid = np.sort(tables["tolerance"].unique())
    nearest = grid[np.argmin(np.abs(np.log10(grid) - math.log10(tolerance)))]
    return tables[tables["tolerance"] == nearest].set_index("run_id")


def _panel_title(method: str, frame: pd.DataFrame) -> str:
    live = frame[~collapsed_mask(frame)]
    return f"phase 2: {METHOD_LABELS.get(method, method)}\n{trainings_text(live)}"


def _by_tolerance(tables: pd.DataFrame, frame: pd.DataFrame, recipe: dict):
    methods = methods_in(frame)
    tolerance = float(recipe["zero_tolerance"])
    fig, axes = subplots(1, len(methods), width=6.2, height=4.6, sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        curves = tables[tables["method"] == method].pivot(index="tolerance", columns="run_id",
                                                          values="minimal_ratio_tol")
        kept = tables[tables["method"] == method].assign(
            kept=lambda t: t["n_positive"] + t["n_negative"]).pivot(index="tolerance", columns="run_id", values="kept")
        ax.plot(curves.index, curves.to_numpy(), color=METHOD_COLORS.get(method, "tab:grey"), linewidth=0.6,
                alpha=0.3)
        ax.plot(curves.index, curves.median(axis=1), color="black", linewidth=2.5, label="median over trainings")
        ax.axvline(tolerance, color="red", linestyle="--", linewidth=1,
                   label=f"τ = {tolerance:g}, the logged minimal_ratio_tol")
        remaining = ax.twinx()
        remaining.plot(kept.index, kept.median(axis=1), color="grey", linestyle=":", linewidth=1.5)
        remaining.set(yscale="log", ylabel=f"eigenvalues with |λ| > τ·max|λ| (median, of {recipe['n_params']})")
        remaining.grid(False)
        ax.plot([], [], color="grey", linestyle=":", label="eigenvalues left (right axis)")
        ax.set(xscale="log", ylim=(-0.02, 1.02), title=_panel_title(method, frame[method_column(frame) == method]),
               xlabel="tolerance τ: eigenvalues with |λ| ≤ τ·max|λ| count as zero",
               ylabel="minimal ratio: fraction > 0 of the others")
        ax.legend(loc="lower right")
    live = frame[~collapsed_mask(frame) & (method_column(frame) == methods[0])]
    fig.suptitle(f"Minimal ratio as a function of the tolerance τ, one thin curve per training: DNN {recipe['widths']}"
                 f" (P={recipe['n_params']}) on sinc,\n{len(live)} live trainings per method, "
                 f"{seeds_text(replicate_column(frame).nunique())} (nets collapsed to a constant left out)")
    return fig


def _representatives(live: pd.DataFrame) -> dict[str, pd.Series]:
    """The trainings with the lowest, median and highest final loss."""
    ordered = live.sort_values("metrics.final_loss")
    return {"lowest loss": ordered.iloc[0], "median loss": ordered.iloc[(len(ordered) - 1) // 2],
            "highest loss": ordered.iloc[-1]}


def _spectra(reader: StoreReader, frame: pd.DataFrame, recipe: dict):
    """Sorted λ/max|λ| of three trainings per method, on a symmetric log axis: signs and magnitudes together."""
    methods = methods_in(frame)
    tolerance = float(recipe["zero_tolerance"])
    floor = 1e-10  # the smallest τ of the grid, about 1,000 × P·ε: the axis is linear below it
    fig, axes = subplots(1, len(methods), width=6.2, height=4.8, sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        rows = frame[(method_column(frame) == method) & ~collapsed_mask(frame)]
        ax.set(xlabel="eigenvalue index (ascending)", ylabel="λ / max|λ| (symmetric log scale)",
               title=_panel_title(method, rows))
        if rows.empty:  # every net of this method collapsed: nothing but zeros to show
            continue
        for (name, row), color in zip(_representatives(rows).items(), ("tab:green", "tab:purple", "tab:red")):
            with tempfile.TemporaryDirectory(prefix="hw1track-") as folder:
                path = reader.client.download_artifacts(row["run_id"], HESSIAN_EIGENVALUES_ARTIFACT, folder)
                eigenvalues = torch.load(path, weights_only=True)["eigenvalues"].numpy()
            relative = eigenvalues / np.abs(eigenvalues).max()
            ax.plot(np.arange(1, len(relative) + 1), relative, marker=".", markersize=3, linewidth=0.8, color=color,
                    label=f"{name}: MSE {row['metrics.final_loss']:.2g}, ‖∇L‖ {row['metrics.final_grad_norm']:.1g}, "
                          f"minimal ratio {row['metrics.minimal_ratio']:.2f}")
        for sign in (1, -1):
            ax.axhline(sign * tolerance, color="black", linestyle="--", linewidth=0.8)
        ax.axhspan(-floor, floor, color="grey", alpha=0.2)
        ax.set_yscale("symlog", linthresh=floor)
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"Full Hessian spectra at the end of phase 2: the trainings with the lowest, median and highest "
                 f"final loss\n(dashed: ±{tolerance:g}, the zero tolerance; grey: |λ| < {floor:g}·max|λ|, "
                 "within a thousand times the rounding error of a float64 spectrum)")
    return fig


def _null_space(tables: pd.DataFrame, frame: pd.DataFrame, recipe: dict):
    """∇L's share in the near-null space against τ, and at the logged τ against how small ∇L got."""
    methods = methods_in(frame)
    tolerance, threshold = float(recipe["zero_tolerance"]), float(recipe["grad_norm_threshold"])
    fig, (curves_ax, scatter_ax) = subplots(1, 2, width=6.2, height=4.8)
    handles = []
    for method in methods:
        color = METHOD_COLORS.get(method, "tab:grey")
        curves = tables[tables["method"] == method].pivot(index="tolerance", columns="run_id",
                                                          values="grad_null_fraction")
        curves_ax.plot(curves.index, curves.to_numpy(), color=color, linewidth=0.6, alpha=0.3)
        curves_ax.plot(curves.index, curves.median(axis=1), color=color, linewidth=2.5,
                       label=f"{METHOD_LABELS.get(method, method)}: median")
        rows = frame[method_column(frame) == method]
        ended = outcomes(rows)
        for outcome, marker in (("reached", REACHED), ("stalled", STALLED), ("capped", CAPPED)):
            points = rows[ended[outcome]]
            scatter_ax.scatter(points["metrics.grad_null_fraction"].clip(lower=1e-16),
                               points["metrics.final_grad_norm"], color=color, marker=marker, s=30,
                               edgecolors="black", linewidths=0.4, alpha=0.8)
        converged = rows[ended["reached"]]
        flat = int((converged["metrics.grad_null_fraction"] >= GRADIENT_FLAT_SHARE).sum())
        handles.append(Line2D([], [], color=color, linestyle="", marker="o",
                              label=f"{METHOD_LABELS.get(method, method)}: {outcome_text(rows, threshold)}; "
                                    f"{flat} of the {len(converged)} below it gradient-flat"))
    curves_ax.axvline(tolerance, color="red", linestyle="--", linewidth=1, label=f"τ = {tolerance:g} (right panel)")
    curves_ax.axhline(GRADIENT_FLAT_SHARE, color="black", linewidth=0.8)
    curves_ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="tolerance τ: the near-null space is |λ| ≤ τ·max|λ|",
                  ylabel="‖P_null ∇L‖² / ‖∇L‖²", title="share of ‖∇L‖² in the near-null space, per training")
    curves_ax.legend(loc="upper left")
    scatter_ax.axvline(GRADIENT_FLAT_SHARE, color="black", linewidth=0.8)
    scatter_ax.axhline(threshold, color="red", linewidth=1)
    scatter_ax.text(0.02, 0.02, "critical points", transform=scatter_ax.transAxes)
    scatter_ax.text(0.98, 0.02, "gradient-flat", transform=scatter_ax.transAxes, ha="right")
    scatter_ax.set(xscale="log", yscale="log", xlabel=f"grad_null_fraction at τ = {tolerance:g} (log scale)",
                   ylabel="final ‖∇L‖ (log scale; red: threshold)",
                   title="o: reached the threshold, □: stalled, △: step cap")
    fig.legend(handles=handles, loc="outside lower center", ncol=1)
    live = frame[~collapsed_mask(frame) & (method_column(frame) == methods[0])]
    fig.suptitle(f"Critical or gradient-flat? {trainings_text(live)} of DNN {recipe['widths']} on sinc"
                 f"{' per method' if len(methods) > 1 else ''} (nets collapsed to a constant left out)")
    return fig


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    frame = runs_frame(children)
    recipe = children[0].data.params
    threshold = float(recipe["grad_norm_threshold"])
    tolerance = float(recipe["zero_tolerance"])
    methods = methods_in(frame)
    drawn = {}
    for method in methods:
        rows = frame[method_column(frame) == method]
        model = f"{trainings_text(rows)} of DNN {recipe['widths']} (P={recipe['n_params']}) on sinc"
        if methods != [ADAM]:
            model += f"\nphase 2: {METHOD_LABELS.get(method, method)}"
        suffix = "" if method == methods[0] else f"_{method}"
        drawn[f"minimal_ratio_vs_loss{suffix}"] = _scatter(
            rows, "minimal_ratio", "minimal ratio: fraction of Hessian eigenvalues > 0",
            f"Minimal ratio vs loss after phase 2\n{model}", threshold)
        drawn[f"minimal_ratio_tol_vs_loss{suffix}"] = _scatter(
            rows, "minimal_ratio_tol", f"fraction of eigenvalues > 0 among those with |λ| > {tolerance:g}·max|λ|",
            f"Minimal ratio ignoring near-zero eigenvalues vs loss\n{model}", threshold)
    drawn["training_curves"] = _training_curves(reader, children, frame,
                                                trainings_text(frame[method_column(frame) == methods[0]]))
    tables = tolerance_tables(reader, frame)
    if not tables.empty:  # runs from before the spectrum was measured at every τ have only the scatters
        drawn["minimal_ratio_by_tolerance"] = _by_tolerance(tables, frame, recipe)
        drawn["hessian_spectra"] = _spectra(reader, frame, recipe)
        drawn["gradient_null_space"] = _null_space(tables, frame, recipe)
    return drawn


def _correlation_claim(method: str, rows: pd.DataFrame, suffix: str, n_seeds: int, threshold: float) -> Claim:
    live = rows[~collapsed_mask(rows)]
    return correlation(
        f"part1_2c.minimal_ratio_vs_loss{suffix}",
        "At the end of phase 2 (‖∇L‖ driven towards 0), trainings with a larger minimal ratio (fraction of "
        "positive Hessian eigenvalues) end at a lower loss: ρ(minimal ratio, final loss) < 0.",
        live["metrics.minimal_ratio"], live["metrics.final_loss"], n_seeds=n_seeds, direction=-1,
        detail=f"phase 2: {METHOD_LABELS.get(method, method)}; {collapsed_text(rows)}: dead ReLUs, left out; "
               f"{outcome_text(rows, threshold)}")


def _critical_claim(method: str, rows: pd.DataFrame, suffix: str, n_seeds: int, threshold: float,
                    tolerance: float) -> Claim:
    """Of the trainings below the threshold, the fraction that are gradient-flat, against one half."""
    converged = rows[outcomes(rows)["reached"]]
    shares = converged["metrics.grad_null_fraction"]
    flat, n = int((shares >= GRADIENT_FLAT_SHARE).sum()), len(converged)
    if n:
        interval = stats.binomtest(flat, n).proportion_ci(CONFIDENCE, method="wilson")
        effect, low, high = flat / n, float(interval.low), float(interval.high)
        note = f"median grad_null_fraction {shares.median():.2g}"
    else:
        effect = low = high = math.nan
        note = "no training reached the threshold: no interval, no verdict"
    return Claim(
        f"part1_2c.converged_trainings_are_critical_points{suffix}",
        f"Most trainings that reach ‖∇L‖ < {threshold:g} are critical points, not gradient-flat points: fewer than "
        f"half of them keep {GRADIENT_FLAT_SHARE:.0%} or more of ‖∇L‖² in the Hessian's near-null space "
        f"(|λ| ≤ {tolerance:g}·max|λ|).",
        effect, f"fraction of the {n} trainings below the threshold that are gradient-flat", low, high, n_seeds,
        verdict(low, high, GRADIENT_FLAT_SHARE, direction=-1), "Wilson score interval of a proportion over trainings",
        f"phase 2: {METHOD_LABELS.get(method, method)}; {outcome_text(rows, threshold)}; {flat} of those {n} are "
        f"gradient-flat; {note}")


def _tolerance_claim(method: str, tables: pd.DataFrame, suffix: str, n_seeds: int) -> Claim:
    """How much the minimal ratio moves between two tolerances, training by training."""
    own = tables[tables["method"] == method]
    low, high = _at_tolerance(own, LOW_TOLERANCE), _at_tolerance(own, HIGH_TOLERANCE)
    change = (high["minimal_ratio_tol"] - low["minimal_ratio_tol"]).dropna()
    kept_low, kept_high = (t["n_positive"] + t["n_negative"] for t in (low, high))
    return directional(
        f"part1_2c.minimal_ratio_depends_on_tolerance{suffix}",
        f"The minimal ratio is mostly where zero is taken to end: counting eigenvalues with |λ| ≤ τ·max|λ| as "
        f"zero, it rises from τ = {LOW_TOLERANCE:g} to τ = {HIGH_TOLERANCE:g}.",
        mean_interval(change), f"mean change of the minimal ratio over {len(change)} trainings", n_seeds=n_seeds,
        method="Student t interval of the mean over trainings",
        detail=f"phase 2: {METHOD_LABELS.get(method, method)}; median minimal ratio "
               f"{low['minimal_ratio_tol'].median():.2f} at τ = {LOW_TOLERANCE:g} over a median of "
               f"{kept_low.median():.0f} eigenvalues, {high['minimal_ratio_tol'].median():.2f} at τ = "
               f"{HIGH_TOLERANCE:g} over {kept_high.median():.0f}")


def _methods_claim(frame: pd.DataFrame, n_seeds: int, threshold: float) -> Claim:
    """Levenberg–Marquardt against Adam from the same phase-1 weights, training by training."""
    key = ["params.replicate", "params.training"] if "params.replicate" in frame else ["params.training"]
    live = frame[~collapsed_mask(frame)].assign(method=method_column, reached=lambda f: outcomes(f)["reached"])
    paired = live.pivot_table(index=key, columns="method", values="reached", aggfunc="first")
    paired = paired.reindex(columns=[ADAM, LEVENBERG_MARQUARDT]).dropna().astype(float)
    difference = paired[LEVENBERG_MARQUARDT] - paired[ADAM]
    counts = "; ".join(f"{METHOD_LABELS[m]}: {outcome_text(frame[method_column(frame) == m], threshold)}"
                       for m in (ADAM, LEVENBERG_MARQUARDT))
    return directional(
        "part1_2c.levenberg_marquardt_reaches_more_critical_points",
        f"From the same phase-1 weights, Levenberg–Marquardt on ∇L brings more trainings below ‖∇L‖ < {threshold:g} "
        "than Adam on ‖∇L‖², each within its own step cap.",
        mean_interval(difference), f"difference in the fraction below the threshold (Levenberg–Marquardt − Adam) "
        f"over {len(difference)} paired trainings", n_seeds=n_seeds,
        method="Student t interval of the mean paired difference over trainings",
        detail=f"{counts}; only Levenberg–Marquardt: {int((difference > 0).sum())}, only Adam: "
               f"{int((difference < 0).sum())}")


def claims(reader: StoreReader, parent: Run) -> list[Claim]:
    """Per phase-2 method: the homework's trend (more positive curvature, lower loss), whether the points it ends at
    are critical, and how much the minimal ratio owes to the tolerance; and which method reaches the threshold more."""
    frame = runs_frame(reader.children(parent))
    if frame.empty:
        return []
    n_seeds = int(replicate_column(frame).nunique())
    threshold = float(frame["params.grad_norm_threshold"].iloc[0])
    methods = methods_in(frame)
    tables = tolerance_tables(reader, frame)
    stated = []
    for method in methods:
        rows = frame[method_column(frame) == method]
        suffix = "" if method == methods[0] else f".{method}"
        stated.append(_correlation_claim(method, rows, suffix, n_seeds, threshold))
        if "metrics.grad_null_fraction" in rows:
            stated.append(_critical_claim(method, rows, suffix, n_seeds, threshold,
                                          float(rows["params.zero_tolerance"].iloc[0])))
        if method in set(tables["method"]):
            stated.append(_tolerance_claim(method, tables, suffix, n_seeds))
    if {ADAM, LEVENBERG_MARQUARDT} <= set(methods):
        stated.append(_methods_claim(frame, n_seeds, threshold))
    return stated
