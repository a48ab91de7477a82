"""part1_3c_i figures and claims: the loss along the line between two solutions, and around each of them.

`interpolation.csv` holds one curve per replicate and pair (columns `replicate`
and `pair`): `shared_init` runs from the batch-64 solution θ₁ to the
batch-1000 solution θ₂ trained from the same initial weights, `independent_init`
from θ₁ to θ₂′, batch 1000 from a seed of its own. A table written before the
second pair existed is the shared pair alone. The claims compare each curve with
its own endpoints before averaging over replicates: how high a seed's curve
lies overall is not what they ask.

`loss_surface.csv` holds the training loss on a plane of two filter-normalised
random directions around θ₁ and θ₂ of replicate 0; both are drawn on one colour
scale, so that their basins compare by eye.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from mlflow.entities import Run
from scipy import stats

from hw1track.reporting.plotting import dataset_title, plot_band, seeds_text, subplots
from hw1track.stats.claims import Claim, mean_above
from hw1track.stats.intervals import CONFIDENCE
from hw1track.tracking.names import INDEPENDENT_INIT, LOSS_SURFACE_ARTIFACT, PARAM_PAIR, PARAM_REPLICATE, \
    SHARED_INIT
from hw1track.tracking.query import StoreReader

LOSS_COLOR, ACCURACY_COLOR = "tab:blue", "tab:red"
CURVE_METRICS = ["train_loss", "test_loss", "train_acc", "test_acc"]
ENDPOINT_TOLERANCE = 1e-9  # α = 0 and α = 1 are on the grid exactly (`alpha_grid`); this only guards the CSV's text
PAIR_TITLES = {
    SHARED_INIT: "shared initialisation: θ₁ → θ₂ (same initial weights and data order)",
    INDEPENDENT_INIT: "independent initialisations: θ₁ → θ₂′ (θ₂′ from a seed of its own)",
}
END_NAMES = {SHARED_INIT: ("θ₁", "θ₂"), INDEPENDENT_INIT: ("θ₁", "θ₂′")}
SURFACE_LEVELS = 20  # colour bands between the lowest and the highest loss of both surfaces


def _curves(reader: StoreReader, parent: Run) -> pd.DataFrame:
    """The interpolation curves; a file written before replicates (or the second pair) existed is replicate 0
    (the shared pair)."""
    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    if PARAM_REPLICATE not in curve.columns:
        curve[PARAM_REPLICATE] = 0
    if PARAM_PAIR not in curve.columns:
        curve[PARAM_PAIR] = SHARED_INIT
    return curve


def _pairs(curve: pd.DataFrame) -> list[str]:
    """The pairs the table holds, the shared one first."""
    return [pair for pair in (SHARED_INIT, INDEPENDENT_INIT) if pair in set(curve[PARAM_PAIR])]


def _endpoints(children: list[Run], pair: str) -> list[Run]:
    """The trained models of `pair`'s curves, θ₁ first: θ₁ was trained for the shared pair and starts both."""
    def alpha(run: Run) -> float:
        return float(run.data.params["interpolation_alpha"])

    return sorted((run for run in children if run.data.params.get(PARAM_PAIR, SHARED_INIT) == pair or alpha(run) == 0),
                  key=alpha)


def figures(reader: StoreReader, parent: Run) -> dict:
    """The interpolation curves of both pairs, and the loss surfaces of invocations that logged them."""
    drawn = {"interpolation": _interpolation_figure(reader, parent)}
    if LOSS_SURFACE_ARTIFACT in reader.artifacts(parent):
        drawn["loss_surface"] = _surface_figure(pd.read_csv(reader.download(parent, LOSS_SURFACE_ARTIFACT)),
                                                dataset_title(parent))
    return drawn


def _interpolation_figure(reader: StoreReader, parent: Run):
    """One panel per pair, loss (log) and accuracy on twin axes against α, the loss axes on one scale."""
    curve = _curves(reader, parent)
    pairs = _pairs(curve)
    n_seeds = curve[PARAM_REPLICATE].nunique()
    children = reader.children(parent)
    fig, panels = subplots(1, len(pairs), width=7.0, height=4.8 if n_seeds == 1 else 5.3, sharey=True, squeeze=False)
    accuracy_axes = [_draw_pair(loss_ax, curve[curve[PARAM_PAIR] == pair], _endpoints(children, pair), pair, n_seeds)
                     for pair, loss_ax in zip(pairs, panels[0])]
    for accuracy_ax in accuracy_axes[:-1]:  # accuracy ticks once, on the right of the last panel
        accuracy_ax.tick_params(labelright=False)
        accuracy_ax.set_ylabel("")
    panels[0][0].set_ylabel("cross-entropy (nats, log scale)", color=LOSS_COLOR)
    fig.suptitle(f"Linear interpolation θ(α) = (1−α)·θ_start + α·θ_end between two solutions, "
                 f"{dataset_title(parent)}\n"
                 f"each curve over {seeds_text(n_seeds)}", fontsize=11)
    lines = panels[0][0].get_legend_handles_labels()[0] + accuracy_axes[0].get_legend_handles_labels()[0]
    key = "solid: train, dashed: test; ○ the trained models' own final metrics"
    if n_seeds > 1:
        key += f"\nthin lines: single seeds; bands: {CONFIDENCE:.0%} CI (train filled, test dotted outline)"
    # Below the axes: inside, any corner hides part of a curve for some pair of models.
    fig.legend(lines, [line.get_label() for line in lines], loc="outside lower center", ncol=4 if n_seeds == 1 else 2,
               title=key)
    return fig


def _draw_pair(loss_ax, curve: pd.DataFrame, endpoints: list[Run], pair: str, n_seeds: int):
    """One pair's curves (mean and band over seeds), its trained models as circles; returns the accuracy axes."""
    replicates = sorted(curve[PARAM_REPLICATE].unique())
    # plot_band reads metric histories: here the "step" is α and each replicate's curve is one "run"
    history = (curve.melt(id_vars=["alpha", PARAM_REPLICATE], value_vars=CURVE_METRICS, var_name="key")
               .rename(columns={"alpha": "step", PARAM_REPLICATE: "run_id"}))
    accuracy_ax = loss_ax.twinx()
    loss_ax.set_label(f"{pair} loss")
    accuracy_ax.set_label(f"{pair} accuracy")
    for split, linestyle in (("train", "-"), ("test", "--")):
        for ax, metric, color, what in ((loss_ax, "loss", LOSS_COLOR, "cross-entropy"),
                                        (accuracy_ax, "acc", ACCURACY_COLOR, "accuracy")):
            plot_band(ax, history, f"{split}_{metric}", replicates, color=color, linestyle=linestyle,
                      label=f"{split} {what}", log=metric == "loss", thin=True)
            if split == "test" and n_seeds > 1:  # train and test bands overlap: the test one only outlined
                band = ax.collections[-1]
                band.set(facecolor="none", edgecolor=color, linestyle=":", linewidth=1.0, alpha=0.7)
    batch_at = {float(run.data.params["interpolation_alpha"]): run.data.params["batch_size"] for run in endpoints}
    for alpha in batch_at:
        loss_ax.axvline(alpha, color="grey", linestyle=":", linewidth=1)
    for run in endpoints:
        alpha, metrics = float(run.data.params["interpolation_alpha"]), run.data.metrics
        # the trained model's own final metrics: its replicate's curve must pass through them
        loss_ax.plot([alpha] * 2, [metrics["train_loss"], metrics["test_loss"]], "o", color=LOSS_COLOR,
                     markerfacecolor="none")
        accuracy_ax.plot([alpha] * 2, [metrics["train_acc"], metrics["test_acc"]], "o", color=ACCURACY_COLOR,
                         markerfacecolor="none")
    names = dict(zip(sorted(batch_at), END_NAMES[pair]))
    endpoint_axis = loss_ax.secondary_xaxis("top")
    endpoint_axis.set_xticks(list(batch_at), [f"{names[alpha]}: batch {batch}" for alpha, batch in batch_at.items()],
                             fontsize=8)
    loss_ax.set(yscale="log", xlabel="α (0: θ_start, 1: θ_end; outside [0, 1]: extrapolation)",
                title=PAIR_TITLES[pair])
    loss_ax.title.set_fontsize(10)
    accuracy_ax.set_ylabel("accuracy (fraction)", color=ACCURACY_COLOR)
    accuracy_ax.set_ylim(0, 1.02)
    accuracy_ax.grid(False)
    return accuracy_ax


def _surface_figure(surface: pd.DataFrame, image_set: str):
    """The loss around each solution, side by side on one logarithmic colour scale with the same levels."""
    solutions = list(dict.fromkeys(surface.solution))
    positive = surface.train_loss[surface.train_loss > 0]
    levels = np.geomspace(positive.min(), positive.max(), SURFACE_LEVELS + 1)
    norm = LogNorm(levels[0], levels[-1])
    fig, panels = subplots(1, len(solutions), width=5.2, height=5.0, sharex=True, sharey=True, squeeze=False)
    filled = None
    for ax, solution in zip(panels[0], solutions):
        rows = surface[surface.solution == solution]
        grid = rows.pivot(index="y", columns="x", values="train_loss")  # rows y, columns x: what contour expects
        filled = ax.contourf(grid.columns, grid.index, grid.to_numpy(), levels=levels, norm=norm, cmap="viridis")
        ax.contour(grid.columns, grid.index, grid.to_numpy(), levels=levels, norm=norm, colors="white",
                   linewidths=0.4, alpha=0.6)
        ax.plot([0], [0], marker="*", markersize=12, color="red", linestyle="none", label="the trained solution")
        side, examples = grid.shape[1], int(rows.examples.iloc[0])
        ax.set(title=f"batch {rows.batch_size.iloc[0]} ({solution}): {side}×{side} grid, {examples:,} training "
                     f"examples", xlabel="step along direction 1 (filter-normalised)",
               ylabel="step along direction 2 (filter-normalised)", aspect="equal")
        ax.title.set_fontsize(10)
        ax.grid(False)  # grid lines would read as contours
        ax.legend(loc="upper right")
    bar = fig.colorbar(filled, ax=list(panels[0]), label="training loss (cross-entropy, nats), log scale",
                       ticks=_ticks(levels), format="%.3g")
    bar.minorticks_off()
    replicates = sorted(surface[PARAM_REPLICATE].unique())
    fig.suptitle(f"{image_set} training loss on a plane of two random filter-normalised directions around each "
                 "solution (Li et al. 2018)\na step of 1 moves every neuron by its own weight norm; the same draw "
                 f"and the same examples for both\nreplicate {', '.join(map(str, replicates))} of the "
                 f"shared-initialisation pair: {seeds_text(len(replicates))}", fontsize=11)
    return fig


def _ticks(levels: np.ndarray) -> np.ndarray:
    """About six of the levels, for a colour bar one can read."""
    return levels[:: max(1, len(levels) // 6)]


def claims(reader: StoreReader, parent: Run) -> list[Claim]:
    """Per replicate, the train loss away from the two solutions minus the loss at them; claims on the mean."""
    curve = _curves(reader, parent)
    low_end, high_end = float(curve.alpha.min()), float(curve.alpha.max())
    shared = curve[curve[PARAM_PAIR] == SHARED_INIT]
    between, beyond = _per_replicate(shared, _rise_between), _per_replicate(shared, _rise_beyond)
    independent = _per_replicate(curve[curve[PARAM_PAIR] == INDEPENDENT_INIT], _rise_between)
    excess = {index: independent[index] - between[index] for index in sorted(independent.keys() & between.keys())}
    beyond_detail = ("" if low_end < 0 and high_end > 1
                     else f"the grid α ∈ [{low_end:g}, {high_end:g}] does not reach past both solutions")
    found = [
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
    if independent:
        found += [
            mean_above("part1_3c_i.barrier_between_independent_inits",
                       "Between two independently initialised solutions (θ₁, batch 64, and θ₂′, batch 1000 from a "
                       "seed of its own) the training loss rises above both, a barrier: the largest train "
                       "cross-entropy over 0 < α < 1 exceeds the larger of the two endpoints'.",
                       list(independent.values()), "max train loss over 0<α<1 − larger endpoint loss (nats)",
                       detail=_detail(independent)),
            mean_above("part1_3c_i.independent_barrier_exceeds_shared",
                       "The barrier between independently initialised solutions is higher than between solutions "
                       "that share their initial weights: per replicate, the independent pair's rise over 0 < α < 1 "
                       "minus the shared pair's (both start at the same θ₁).",
                       list(excess.values()), "independent − shared rise over 0<α<1, train loss (nats)",
                       detail=_detail(excess)),
        ]
    return found


def _per_replicate(curve: pd.DataFrame, measure) -> dict[int, float]:
    """`measure` of each replicate's curve (α, train loss, sorted by α), where it is defined."""
    values = {}
    for index, rows in curve.groupby(PARAM_REPLICATE):
        rows = rows.sort_values("alpha")
        value = measure(rows.alpha.to_numpy(), rows.train_loss.to_numpy())
        if value is not None:
            values[int(index)] = value
    return values


def _at(alpha: np.ndarray, loss: np.ndarray, where: float) -> float:
    return loss[np.abs(alpha - where) <= ENDPOINT_TOLERANCE][0]


def _rise_between(alpha: np.ndarray, loss: np.ndarray) -> float | None:
    """The largest loss strictly between the solutions minus the larger of theirs; None without an interior point."""
    inside = loss[(alpha > ENDPOINT_TOLERANCE) & (alpha < 1 - ENDPOINT_TOLERANCE)]
    if not len(inside):
        return None
    return float(inside.max() - max(_at(alpha, loss, 0), _at(alpha, loss, 1)))


def _rise_beyond(alpha: np.ndarray, loss: np.ndarray) -> float | None:
    """The smaller rise from a solution to the grid's end past it; None when the grid does not reach past both."""
    if not (alpha[0] < 0 and alpha[-1] > 1):
        return None
    return float(min(loss[0] - _at(alpha, loss, 0), loss[-1] - _at(alpha, loss, 1)))


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
