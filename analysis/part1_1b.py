"""part1_1b figures and claims: train and test loss and accuracy per epoch for the 1-, 2- and 3-conv CNNs.

Each CNN is drawn as the mean of its replicates with a 95 % band, so a gap
between depths can be told from the spread between seeds of one depth.
"""

from __future__ import annotations

from matplotlib.ticker import MaxNLocator
from mlflow.entities import Run

from hw1track.reporting.plotting import dataset_title, limit_to_lines, plot_band, run_colors, seeds_text, subplots
from hw1track.stats.claims import Claim, difference_of_means
from hw1track.tracking.query import StoreReader, by_group


def _models(children: list[Run]) -> list[list[Run]]:
    """The replicates of each CNN, fewest conv layers first."""
    return sorted(by_group(children).values(), key=lambda runs: int(runs[0].data.params["conv_layers"]))


def _name(runs: list[Run]) -> str:
    params = runs[0].data.params
    return f"{params['model']} ({params['conv_layers']} conv, P={params['n_params']})"


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    history = reader.history(children, ["train_loss", "test_loss", "train_acc", "test_acc"])
    models = _models(children)
    colors = run_colors([runs[0].info.run_id for runs in models])
    n_seeds = max(len(runs) for runs in models)
    first = models[0][0].data.params
    recipe = f"Adam {first['lr']}, batch {first['batch_size']}, {first['n_train']} training images"
    figures = {}
    for metric, axis_label, scale in (("loss", "cross-entropy", "log"), ("acc", "accuracy (fraction)", "linear")):
        title = (f"{dataset_title(parent)} {axis_label.split(' ')[0]} per epoch (train solid, test dashed), "
                 f"{seeds_text(n_seeds)} per CNN\n{recipe}")
        ylabel = f"{axis_label}{' (log scale)' if scale == 'log' else ''}"
        if n_seeds == 1:  # the one-seed figure: both splits on one panel, as before replicates existed
            fig, ax = subplots(width=7.5, height=5.0)
            panels = {"train": ax, "test": ax}
            ax.set_title(title)
        else:  # six overlapping bands would hide each other: one panel per split, on a shared y-axis
            fig, axes = subplots(1, 2, width=6.0, height=5.0, sharey=True)
            panels = dict(zip(("train", "test"), axes))
            fig.suptitle(title)
        for runs, color in zip(models, colors.values()):
            ids = [run.info.run_id for run in runs]
            for split, linestyle in (("train", "-"), ("test", "--")):
                plot_band(panels[split], history, f"{split}_{metric}", ids, color=color, linestyle=linestyle,
                          label=f"{_name(runs)} {split}", log=scale == "log")
        for split, ax in panels.items():
            ax.set(xlabel="epoch", ylabel=ylabel, yscale=scale)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if n_seeds > 1:
                ax.set_title(f"{split} set")
        limit_to_lines(*dict.fromkeys(panels.values()))  # on the shared y-axis, every panel's lines
        for ax in dict.fromkeys(panels.values()):
            ax.legend(ncol=2 if n_seeds == 1 else 1, fontsize=7)
        figures["loss" if metric == "loss" else "accuracy"] = fig
    return figures


def claims(reader: StoreReader, parent: Run) -> list[Claim]:
    """The deepest CNN against the shallowest; each model has its own seeds, so the interval is unpaired (Welch)."""
    models = _models(reader.children(parent))
    shallowest, deepest = models[0], models[-1]
    if deepest is shallowest:
        return []
    return [difference_of_means(
        "part1_1b.deepest_beats_shallowest",
        f"The deepest CNN, {_name(deepest)}, reaches a higher final test accuracy than the shallowest, "
        f"{_name(shallowest)}.",
        [run.data.metrics["test_acc"] for run in deepest], [run.data.metrics["test_acc"] for run in shallowest],
        "mean final test accuracy, deepest − shallowest (fraction)",
        detail=f"{len(deepest)} seeds of {deepest[0].data.params['model']}, "
               f"{len(shallowest)} of {shallowest[0].data.params['model']}")]
