"""part1_3a figure: loss and accuracy per epoch on random vs true labels, with the slowdown of memorisation."""

from __future__ import annotations

from matplotlib.ticker import MaxNLocator
from mlflow.entities import Run

from hw1track.reporting.plotting import plot_curves, subplots
from hw1track.tracking.query import StoreReader

MILESTONE = "epochs_to_90pct_train_acc"
COLORS = {"random": "tab:red", "true": "tab:blue"}
CHANCE = 0.1  # ten balanced classes
MILESTONE_ACC = 0.9  # the threshold the metric name MILESTONE refers to


def slowdown_text(children: list[Run], history) -> str:
    """How many times more epochs random labels need than true labels to reach 90 % training accuracy."""
    reached = {run.data.params["label_mode"]: run.data.metrics.get(MILESTONE) for run in children}
    epochs = {run.data.params["label_mode"]: int(history[history.run_id == run.info.run_id].step.max())
              for run in children}
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


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    history = reader.history(children, ["train_loss", "test_loss", "train_acc", "test_acc"])
    labels = {run.info.run_id: f"{run.data.params['label_mode']} labels" for run in children}
    colors = {run.info.run_id: COLORS[run.data.params["label_mode"]] for run in children}
    first = children[0].data.params
    schedule = f" (cosine to 0 over {first['epochs']} epochs)" if first.get("anneal_lr") == "True" else ""

    fig, (ax_loss, ax_acc) = subplots(2, 1, width=8.0, height=3.6, sharex=True)
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        plot_curves(ax, history, f"train_{metric}", labels, colors=colors, suffix=", train")
        plot_curves(ax, history, f"test_{metric}", labels, colors=colors, linestyle="--", suffix=", test (true labels)")
    for run in children:
        if MILESTONE in run.data.metrics:
            ax_acc.axvline(run.data.metrics[MILESTONE], color=colors[run.info.run_id], linestyle=":", linewidth=1)
    references = [ax_acc.axhline(CHANCE, color="gray", linewidth=0.8, label="chance (0.1)"),
                  ax_acc.axhline(MILESTONE_ACC, color="gray", linewidth=0.8, linestyle=":",
                                 label="90 % (dotted verticals: first epoch there)")]
    ax_loss.set(yscale="log", ylabel="cross-entropy (log scale)",
                title=f"MLP {first['widths']} (P={int(first['n_params']):,}), {int(first['n_train']):,} MNIST images\n"
                      f"Adam {first['lr']}{schedule}, batch {first['batch_size']}\n{slowdown_text(children, history)}")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    # below both panels, where no curve can hide behind it
    fig.legend(handles=[*ax_loss.get_lines(), *references], loc="outside lower center", ncol=3)
    return {"random_labels": fig}
