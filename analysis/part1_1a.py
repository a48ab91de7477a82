"""part1_1a figures and claims: loss curves and predictions of the deep, middle and shallow fits, per target.

A net tagged `hw1track.stuck` has collapsed to a constant (dead ReLUs): its loss
says nothing about what its depth can fit, only that this seed failed. Such
nets are counted and drawn apart (thin, grey, dashed) and left out of every
mean, band and claim, so that depths are compared over the nets that trained;
the figures print how many of each depth were live, so a comparison resting on
fewer seeds than asked for is visible rather than hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from matplotlib.lines import Line2D
from mlflow.entities import Run

from hw1track.reporting.plotting import limit_to_lines, plot_band, run_colors, seeds_text, subplots
from hw1track.stats.claims import Claim, difference_of_means
from hw1track.stats.intervals import CONFIDENCE, mean_interval
from hw1track.tracking.names import TAG_STUCK
from hw1track.tracking.query import StoreReader, by_group

DEAD_STYLE = {"color": "0.55", "linestyle": "--", "linewidth": 0.8}
DEAD_LEGEND = "dead net (collapsed to a constant), left out of the means"


def is_dead(run: Run) -> bool:
    return run.data.tags.get(TAG_STUCK) == "true"


@dataclass(frozen=True)
class Fits:
    """The replicates of one net on one target, split into those that trained and those that died."""

    target: str
    model: str
    widths: str
    n_params: int
    depth: int
    live: tuple[Run, ...]
    dead: tuple[Run, ...]

    @property
    def total(self) -> int:
        return len(self.live) + len(self.dead)

    @property
    def name(self) -> str:
        return f"{self.model} {self.widths}, P={self.n_params}"

    def dead_text(self) -> str:
        """'' when every seed trained, else how many died: 'dead' for a lone seed, '1 of 3 seeds dead' otherwise."""
        if not self.dead:
            return ""
        return "dead" if self.total == 1 else f"{len(self.dead)} of {self.total} seeds dead"

    def final_log_mse(self) -> list[float]:
        """log10 of each live net's final full-batch training MSE: the scale on which the fits differ."""
        return [math.log10(run.data.metrics["train_loss"]) for run in self.live]


def fits_by_target(children: list[Run]) -> dict[str, list[Fits]]:
    """Per target (in run order), the live and dead replicates of each net, in run order."""
    found: dict[str, list[Fits]] = {}
    for runs in by_group(children).values():
        params = runs[0].data.params
        found.setdefault(params["target"], []).append(Fits(
            target=params["target"], model=params["model"].rsplit("/", 1)[-1], widths=params["widths"],
            n_params=int(params["n_params"]), depth=int(params["depth"]),
            live=tuple(run for run in runs if not is_dead(run)), dead=tuple(run for run in runs if is_dead(run))))
    return found


def _label(fits: Fits) -> str:
    dead = fits.dead_text()
    return f"{fits.name}: {dead}" if dead else fits.name


def _dead_only_label(fits: Fits, index: int) -> str | None:
    """A net none of whose seeds trained still gets its legend entry, on its first grey line."""
    return _label(fits) if not fits.live and index == 0 else None


def _live_summary(nets: list[Fits]) -> str:
    """The comparison of depths over live nets, with how many were live: printed on the figure."""
    lines = [f"final MSE over live nets{' (geometric mean)' if max(f.total for f in nets) > 1 else ''}:"]
    for fits in nets:
        interval = mean_interval(fits.final_log_mse())
        if interval.n == 0:
            value = "none live"
        elif interval.n == 1:
            value = f"{10 ** interval.mean:.2e}"
        else:
            value = (f"{10 ** interval.mean:.2e}  {CONFIDENCE:.0%} CI "
                     f"[{10 ** interval.low:.1e}, {10 ** interval.high:.1e}]")
        lines.append(f"{fits.model:<8} {len(fits.live)} of {fits.total} live   {value}")
    return "\n".join(lines)


def _legend(ax, nets: list[Fits]) -> None:
    """The nets, one entry for every grey dashed line and, once there is a spread or a dead net to account for,
    the comparison over live nets as the legend's title, below the panel where it hides no curve.

    A one-seed study with no dead net keeps the plain legend inside the panel.
    """
    handles, labels = ax.get_legend_handles_labels()
    if any(fits.dead for fits in nets):
        handles, labels = handles + [Line2D([], [], **DEAD_STYLE)], labels + [DEAD_LEGEND]
    if max(f.total for f in nets) == 1 and not any(f.dead for f in nets):
        ax.legend(handles, labels, loc="best")
        return
    legend = ax.figure.legend(handles, labels, loc="outside lower center", title=_live_summary(nets),
                              title_fontsize=8, alignment="left", fontsize=8)
    legend.get_title().set_family("monospace")


def _predictions(reader: StoreReader, runs: tuple[Run, ...]) -> pd.DataFrame:
    """The predicted grids of `runs` as a metric-history-shaped frame (step = x), so `plot_band` can draw them."""
    frames = []
    for run in runs:
        grid = pd.read_csv(reader.download(run, "predictions.csv"))
        frames.append(pd.DataFrame({"run_id": run.info.run_id, "key": "y_pred", "step": grid.x,
                                    "value": grid.y_pred, "y_true": grid.y_true}))
    return pd.concat(frames, ignore_index=True)


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    history = reader.history(children, ["train_loss"])
    figures = {}
    for target, nets in fits_by_target(children).items():
        colors = run_colors([fits.model for fits in nets])
        n_seeds = max(fits.total for fits in nets)
        live_counts = ", ".join(f"{fits.model} {len(fits.live)}/{fits.total}" for fits in nets)
        counts = f"\nlive nets (the rest died): {live_counts}" if any(fits.dead for fits in nets) else ""

        fig, ax = subplots(width=7.5, height=6.2)
        for fits in nets:
            plot_band(ax, history, "train_loss", [run.info.run_id for run in fits.live], color=colors[fits.model],
                      label=_label(fits), log=True, thin=True)
            for i, run in enumerate(fits.dead):
                mine = history[(history.run_id == run.info.run_id) & (history.key == "train_loss")]
                ax.plot(mine.step, mine.value, **DEAD_STYLE, label=_dead_only_label(fits, i))
        ax.set(yscale="log", xlabel="epoch (full-batch Adam update)", ylabel="training MSE (log scale)",
               title=f"Training loss on {target}, full-batch Adam, {seeds_text(n_seeds)} per net{counts}")
        limit_to_lines(ax)
        _legend(ax, nets)
        figures[f"loss_{target}"] = fig

        fig, ax = subplots(width=7.5, height=6.2)
        truth_drawn = False
        for fits in nets:
            if not fits.total:
                continue
            grids = _predictions(reader, fits.live + fits.dead)
            if not truth_drawn:
                first = grids[grids.run_id == grids.run_id.iloc[0]]
                ax.plot(first.step, first.y_true, color="black", linewidth=2.5, label="ground truth")
                truth_drawn = True
            plot_band(ax, grids, "y_pred", [run.info.run_id for run in fits.live], color=colors[fits.model],
                      label=_label(fits), thin=True)
            for i, run in enumerate(fits.dead):
                mine = grids[grids.run_id == run.info.run_id]
                ax.plot(mine.step, mine.value, **DEAD_STYLE, label=_dead_only_label(fits, i))
        ax.set(xlabel="x", ylabel="f(x)",
               title=f"Predictions after training on {target}, {seeds_text(n_seeds)} per net{counts}")
        limit_to_lines(ax)
        _legend(ax, nets)
        figures[f"predictions_{target}"] = fig
    return figures


def claims(reader: StoreReader, parent: Run) -> list[Claim]:
    """Per target, the deepest net against the shallowest of equal P, over the nets that did not die.

    The final MSEs of different seeds span decades, so they are compared as
    log10; the seeds of the two nets are distinct, hence an unpaired (Welch) interval.
    """
    found = []
    for target, nets in fits_by_target(reader.children(parent)).items():
        deep, shallow = max(nets, key=lambda f: f.depth), min(nets, key=lambda f: f.depth)
        if deep is shallow:
            continue
        found.append(difference_of_means(
            f"part1_1a.{target}_deep_beats_shallow",
            f"On {target}, the deep net ({deep.widths}, P={deep.n_params}) reaches a lower final training MSE "
            f"than the shallow net ({shallow.widths}, P={shallow.n_params}) of equal size.",
            shallow.final_log_mse(), deep.final_log_mse(),
            "mean log10 final train MSE, shallow − deep (live nets)",
            detail=f"live nets: deep {len(deep.live)} of {deep.total}, shallow {len(shallow.live)} of "
                   f"{shallow.total}; dead nets (collapsed to a constant) left out"))
    return found
