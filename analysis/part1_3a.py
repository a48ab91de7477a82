"""part1_3a figure and claims: loss and accuracy per epoch on random vs true labels, and the slowdown of memorisation.

Each replicate trains a random-label and a true-label model from the same seed
(same initial weights and data order), so the slowdown is a paired ratio per
replicate. With several replicates each label mode is drawn as the mean of its
replicates with a 95 % band (loss: geometric mean, for the log axis), each
replicate as a thin line behind it, because runs stop at different epochs and a
mean alone would jump where one of them ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from mlflow.entities import Run

from hw1track.reporting.plotting import dataset_title, plot_band, seeds_text, subplots
from hw1track.stats.claims import Claim, equivalent_to, mean_above
from hw1track.stats.intervals import CONFIDENCE, mean_interval
from hw1track.tracking.query import StoreReader, replicate

MILESTONE = "epochs_to_90pct_train_acc"
COLORS = {"random": "tab:red", "true": "tab:blue"}
CHANCE = 0.1  # ten balanced classes
MILESTONE_ACC = 0.9  # the threshold the metric name MILESTONE refers to
# Test accuracy "at chance" may differ from 0.1 without the network knowing anything: a rule that ignores the
# image still scores the frequency of the class it favours, and MNIST's test classes range from 8.9 % (digit 5)
# to 11.35 % (digit 1); on top of that the test set is a sample, with a binomial standard error of
# √(0.1·0.9/n_test) that no number of seeds averages away (every replicate is tested on the same images).
# Fashion-MNIST's test classes are 10 % each, but the same margin applies to it: images of one class share
# their (random) predicted label, so a memorising net's accuracy strays from 0.1 by more than the binomial
# error (0.107 on one seed at the full preset), and one margin keeps the two sets' verdicts comparable.
CLASS_IMBALANCE_MARGIN = 0.015
SAMPLING_STANDARD_ERRORS = 2


def chance_margin(n_test: int) -> float:
    """How far from 0.1 a test accuracy may lie and still be chance, for a test set of `n_test` images."""
    return CLASS_IMBALANCE_MARGIN + SAMPLING_STANDARD_ERRORS * math.sqrt(CHANCE * (1 - CHANCE) / n_test)


def by_replicate(children: list[Run]) -> dict[int, dict[str, Run]]:
    """replicate -> label mode -> run: the two label modes of one replicate share their seed, so they pair."""
    pairs: dict[int, dict[str, Run]] = {}
    for run in children:
        pairs.setdefault(replicate(run), {})[run.data.params["label_mode"]] = run
    return dict(sorted(pairs.items()))


@dataclass(frozen=True)
class Slowdown:
    """One replicate's ratio of epochs to 90 % train accuracy, random / true labels.

    When the random-label model never got there, `ratio` is the lower bound
    last epoch / true epochs (`censored`); when the true-label model never
    did, there is no ratio (NaN).
    """

    replicate: int
    random_epoch: float | None
    true_epoch: float | None
    random_last_epoch: int
    ratio: float
    censored: bool


def slowdowns(pairs: dict[int, dict[str, Run]], last_epochs: dict[str, int]) -> list[Slowdown]:
    """The paired slowdown of every replicate that trained both label modes."""
    found = []
    for index, modes in pairs.items():
        if {"random", "true"} - set(modes):
            continue
        random_epoch = modes["random"].data.metrics.get(MILESTONE)
        true_epoch = modes["true"].data.metrics.get(MILESTONE)
        last = last_epochs[modes["random"].info.run_id]
        if not true_epoch:
            ratio = math.nan
        else:
            ratio = (random_epoch or last) / true_epoch
        found.append(Slowdown(index, random_epoch, true_epoch, last, ratio, censored=not random_epoch))
    return found


def _last_epochs(history) -> dict[str, int]:
    return {run_id: int(rows.step.max()) for run_id, rows in history.groupby("run_id")}


def _single_slowdown_text(children: list[Run], last_epochs: dict[str, int]) -> str:
    """The one-replicate wording, as the figure has always said it."""
    reached = {run.data.params["label_mode"]: run.data.metrics.get(MILESTONE) for run in children}
    epochs = {run.data.params["label_mode"]: last_epochs[run.info.run_id] for run in children}
    if set(reached) != {"random", "true"}:
        return ", ".join(f"{mode} labels: 90 % train accuracy at epoch {reached[mode]:.0f}" if reached[mode]
                         else f"{mode} labels: below 90 % after {epochs[mode]} epochs" for mode in reached)
    random, true = reached["random"], reached["true"]
    if random and true:
        return (f"epochs to 90 % train accuracy: random {random:.0f}, true {true:.0f} "
                f"→ memorising is {random / true:.0f}× slower")
    if true:
        return (f"90 % train accuracy: true labels at epoch {true:.0f}, random not within {epochs['random']} "
                f"→ > {epochs['random'] / true:.0f}× slower")
    return "true labels did not reach 90 % train accuracy: the recipe is too short to compare"


def _mean_epoch_text(runs: list[Run], last_epochs: dict[str, int]) -> str:
    reached = [run.data.metrics[MILESTONE] for run in runs if MILESTONE in run.data.metrics]
    text = f"{mean_interval(reached).mean:.1f}" if reached else "never"
    missing = len(runs) - len(reached)
    if reached and missing:
        text += f" ({missing} of {len(runs)} below 90 % after {max(last_epochs[r.info.run_id] for r in runs)})"
    return text


def slowdown_text(children: list[Run], history) -> str:
    """How many times more epochs random labels need than true labels to reach 90 % training accuracy."""
    last_epochs = _last_epochs(history)
    pairs = by_replicate(children)
    if len(pairs) == 1:
        return _single_slowdown_text(children, last_epochs)
    modes = {mode: [run for run in children if run.data.params["label_mode"] == mode] for mode in COLORS}
    if not modes["random"] or not modes["true"]:
        return ", ".join(f"{mode} labels: 90 % train accuracy at epoch {_mean_epoch_text(runs, last_epochs)} "
                         f"(mean of {len(runs)})" for mode, runs in modes.items() if runs)
    found = [s for s in slowdowns(pairs, last_epochs) if not math.isnan(s.ratio)]
    epochs = (f"mean epochs to 90 % train accuracy: random {_mean_epoch_text(modes['random'], last_epochs)}, "
              f"true {_mean_epoch_text(modes['true'], last_epochs)}")
    if not found:
        return f"{epochs}: true labels never reached 90 %, no slowdown to measure"
    interval = mean_interval(s.ratio for s in found)
    bound = "≥ " if any(s.censored for s in found) else ""
    spread = (f"{CONFIDENCE:.0%} CI {interval.low:.1f}–{interval.high:.1f}, " if interval.n > 1 else "")
    return (f"{epochs}\n→ memorising is {bound}{interval.mean:.1f}× slower "
            f"({spread}paired per seed, {seeds_text(interval.n)})")


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    history = reader.history(children, ["train_loss", "test_loss", "train_acc", "test_acc"])
    modes = {}
    for run in children:
        modes.setdefault(run.data.params["label_mode"], []).append(run)
    n_seeds = max(len(runs) for runs in modes.values())
    first = children[0].data.params
    schedule = f" (cosine to 0 over {first['epochs']} epochs)" if first.get("anneal_lr") == "True" else ""

    fig, (ax_loss, ax_acc) = subplots(2, 1, width=8.0, height=3.6 if n_seeds == 1 else 3.9, sharex=True)
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        for split, linestyle, suffix in (("train", "-", ", train"), ("test", "--", ", test (true labels)")):
            for mode, runs in modes.items():
                plot_band(ax, history, f"{split}_{metric}", [run.info.run_id for run in runs], color=COLORS[mode],
                          label=f"{mode} labels{suffix}", linestyle=linestyle, log=metric == "loss",
                          thin=n_seeds > 1)
    for run in children:
        if MILESTONE in run.data.metrics:
            ax_acc.axvline(run.data.metrics[MILESTONE], color=COLORS[run.data.params["label_mode"]], linestyle=":",
                           linewidth=1)
    references = [ax_acc.axhline(CHANCE, color="gray", linewidth=0.8, label="chance (0.1)"),
                  ax_acc.axhline(MILESTONE_ACC, color="gray", linewidth=0.8, linestyle=":",
                                 label="90 % (dotted verticals: first epoch there)")]
    seeds = "" if n_seeds == 1 else f", {seeds_text(n_seeds)} per label mode"
    ax_loss.set(yscale="log", ylabel="cross-entropy (log scale)",
                title=f"MLP {first['widths']} (P={int(first['n_params']):,}), {int(first['n_train']):,} "
                      f"{dataset_title(parent)} images"
                      f"{seeds}\nAdam {first['lr']}{schedule}, batch {first['batch_size']}\n"
                      f"{slowdown_text(children, history)}")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    # below both panels, where no curve can hide behind it
    fig.legend(handles=[*_curve_handles(ax_loss, n_seeds), *references], loc="outside lower center", ncol=3)
    return {"random_labels": fig}


def _curve_handles(ax_loss, n_seeds: int) -> list:
    """The legend's curves: as drawn for one seed; for several, what a line, a band and a thin line stand for.

    `plot_band` names its mean "geometric" on the loss panel, which the
    accuracy panel's arithmetic mean is not, so one shared legend says both.
    """
    if n_seeds == 1:
        return ax_loss.get_lines()
    handles = [Line2D([], [], color=COLORS[mode], linestyle=linestyle, label=f"{mode} labels{suffix}")
               for linestyle, suffix in (("-", ", train"), ("--", ", test (true labels)")) for mode in COLORS]
    return [*handles,
            Line2D([], [], color="gray", label=f"mean of {seeds_text(n_seeds)} (loss: geometric mean)"),
            Patch(color="gray", alpha=0.25, label=f"{CONFIDENCE:.0%} CI of that mean"),
            Line2D([], [], color="gray", linewidth=0.5, alpha=0.5, label="one seed")]


def claims(reader: StoreReader, parent: Run) -> list[Claim]:
    """Zhang et al.'s three observations: random labels are fitted, generalise at chance, and fit more slowly."""
    children = reader.children(parent)
    pairs = by_replicate(children)
    randoms = [modes["random"] for modes in pairs.values() if "random" in modes]
    if not randoms:
        return []
    stop = float(randoms[0].data.params.get("stop_train_acc", MILESTONE_ACC))
    # Training stops at the first epoch at `stop`, so final accuracies sit just above it and an interval
    # read against `stop` itself would straddle it by construction; 90 % is memorising all the same.
    memorised_at = min(stop, MILESTONE_ACC)
    train_accuracies = [run.data.metrics["train_acc"] for run in randoms]
    found = [mean_above(
        "part1_3a.random_labels_memorised",
        f"The network fits randomly permuted training labels: its final training accuracy on them exceeds "
        f"{memorised_at:g}.",
        train_accuracies, "mean final train accuracy on random labels", threshold=memorised_at,
        detail=f"training stops at train accuracy {stop:g}; per seed: "
               + ", ".join(f"{value:.3f}" for value in train_accuracies))]

    n_test = int(randoms[0].data.params["n_test"])
    margin = chance_margin(n_test)
    test_accuracies = [run.data.metrics["test_acc"] for run in randoms]
    found.append(equivalent_to(
        "part1_3a.random_labels_test_at_chance",
        f"Trained on random labels, the network's accuracy on the true test labels stays at chance, "
        f"{CHANCE:g} ± {margin:.3f}.",
        test_accuracies, CHANCE, margin, "mean final test accuracy − 0.1",
        detail=f"margin = {CLASS_IMBALANCE_MARGIN:g} (what ignoring the image can score on MNIST) + "
               f"{SAMPLING_STANDARD_ERRORS}×√(0.09/{n_test}) (binomial error of {n_test} test images); per seed: "
               + ", ".join(f"{value:.3f}" for value in test_accuracies)))

    if any({"random", "true"} <= set(modes) for modes in pairs.values()):
        found.append(_slower_claim(reader, pairs))
    return found


def _slower_claim(reader: StoreReader, pairs: dict[int, dict[str, Run]]) -> Claim:
    randoms = [modes["random"] for modes in pairs.values() if "random" in modes]
    last_epochs = _last_epochs(reader.history(randoms, ["train_acc"]))
    measured = slowdowns(pairs, last_epochs)
    ratios = [s.ratio for s in measured if not math.isnan(s.ratio)]
    notes = [f"replicate {s.replicate}: {slowdown_note(s)}" for s in measured]
    return mean_above(
        "part1_3a.memorising_is_slower",
        "Memorising random labels takes more epochs than learning the true ones: the ratio of epochs to 90 % "
        "train accuracy, random / true labels from the same seed, exceeds 1.",
        ratios, "mean ratio of epochs to 90 % train accuracy (random / true)", threshold=1.0,
        detail="; ".join(notes))


def slowdown_note(slowdown: Slowdown) -> str:
    """One replicate's ratio as the claim's detail gives it, saying when it is only a lower bound."""
    if math.isnan(slowdown.ratio):
        return "true labels never reached 90 %, no ratio"
    if slowdown.censored:
        return (f"random labels below 90 % after {slowdown.random_last_epoch} epochs, counted as the lower bound "
                f"{slowdown.random_last_epoch} / {slowdown.true_epoch:.0f} = {slowdown.ratio:.2f}")
    return f"{slowdown.random_epoch:.0f} / {slowdown.true_epoch:.0f} = {slowdown.ratio:.2f}"
