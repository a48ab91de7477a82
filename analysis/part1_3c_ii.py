"""part1_3c_ii figure: final loss and accuracy with sensitivity and sharpness, against the batch size."""

from __future__ import annotations

import pandas as pd
from mlflow.entities import Run

from hw1track.reporting.plotting import subplots
from hw1track.tracking.query import StoreReader

SHARPNESS_PREFIX = "sharpness_eps"
TRAIN_COLOR, TEST_COLOR = "tab:blue", "tab:orange"


def _final_values(children: list[Run]) -> pd.DataFrame:
    rows = [{"batch_size": int(run.data.params["batch_size"]), **run.data.metrics} for run in children]
    return pd.DataFrame(rows).sort_values("batch_size").reset_index(drop=True)


def _plot_loss_and_accuracy(ax, final: pd.DataFrame) -> None:
    for split, color in (("train", TRAIN_COLOR), ("test", TEST_COLOR)):
        ax.plot(final.batch_size, final[f"{split}_loss"], "-o", color=color, label=f"{split} cross-entropy")
        ax.plot(final.batch_size, final[f"{split}_acc"], "--s", color=color, label=f"{split} accuracy")
    ax.set(xscale="log", xlabel="batch size (log scale)",
           ylabel="cross-entropy (nats)  /  accuracy (fraction)")
    ax.set_xticks(final.batch_size, [str(b) for b in final.batch_size], rotation=45, fontsize=8)
    ax.minorticks_off()


def _legend(ax, twin) -> None:
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], loc="center left", fontsize=7)


def figures(reader: StoreReader, parent: Run) -> dict:
    final = _final_values(reader.children(parent))
    sharpness_keys = sorted((key for key in final.columns if key.startswith(SHARPNESS_PREFIX)),
                            key=lambda key: -float(key.removeprefix(SHARPNESS_PREFIX)))
    updates = ", ".join(f"{b}: {int(u)}" for b, u in zip(final.batch_size, final.n_updates))

    fig, (left, right) = subplots(1, 2, width=6.2, height=4.6)
    _plot_loss_and_accuracy(left, final)
    sensitivity_ax = left.twinx()
    sensitivity_ax.plot(final.batch_size, final.sensitivity, "-^", color="tab:green", linewidth=2,
                        label="sensitivity (test)")
    sensitivity_ax.set_ylabel("sensitivity: mean ‖∂softmax/∂x‖_F", color="tab:green")
    sensitivity_ax.grid(False)
    left.set_title("Sensitivity vs batch size")
    _legend(left, sensitivity_ax)

    _plot_loss_and_accuracy(right, final)
    sharpness_ax = right.twinx()
    for key, color in zip(sharpness_keys, ("tab:red", "tab:purple")):
        epsilon = key.removeprefix(SHARPNESS_PREFIX)
        sharpness_ax.plot(final.batch_size, final[key], "-D", color=color, linewidth=2,
                          label=f"sharpness, ε = {epsilon}")
    sharpness_ax.set_ylabel("sharpness φ_ε (% rise of training loss)", color="tab:red")
    sharpness_ax.grid(False)
    right.set_title("Sharpness (Keskar et al. 2017) vs batch size")
    _legend(right, sharpness_ax)

    fig.suptitle(f"MNIST MLP, same epochs for every batch size (updates per model: {updates})", fontsize=9)
    return {"batch_size": fig}
