"""`hw1track new NAME`: a new experiment that runs, draws and passes its test as written.

A student extending the homework starts from working code instead of from the
contracts in the README: the skeleton trains a few small MLPs along one swept
knob, draws one figure from the store, and tests both at tiny settings. Every
part is meant to be edited; nothing else in the project has to change, since
`hw1track.study.discovery` finds the new modules by their folder.
"""

from __future__ import annotations

import importlib.util
import keyword
from dataclasses import dataclass
from pathlib import Path
from string import Template

from hw1track.errors import Hw1Error, UsageError
from hw1track.study.discovery import experiments_folder

DATA_KINDS = ("mnist", "synthetic")

# Templates use string.Template, so `$name` is the only placeholder and Python's braces stay as they are.

_MNIST_RUN = '''\
"""$name: final accuracy of a one-hidden-layer MLP on MNIST as its width grows.

One MLP 784-`width`-10 per value of `widths`, all trained with one recipe
(Adam `lr`, batch `batch_size`, `epochs` epochs on the same images). Each is a
child run with param `width` and per-epoch train and test loss and accuracy
(full-set evaluations); analysis/$name.py draws the final accuracy against
the width. The first line above is what `hw1track list` shows: make it say
what your experiment asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw1track.config import SWEEP, MnistSplits, setting
from hw1track.study.context import RunContext
from hw1track.training.models import describe, mlp

DATA = "mnist"


@dataclass(frozen=True)
class Config(MnistSplits):
    # The swept knob: one child run per value; `--set widths=32,512` changes it from the command line.
    # SWEEP: each child carries its own width, so adding a width trains only the new model; every other
    # field is part of each model's identity, so changing it trains them all again.
    widths: tuple[int, ...] = setting((16, 64, 256, 1024), role=SWEEP)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    # A field that needs bounds or a fixed set of values is declared with hw1track.config.setting,
    # e.g. `optimizer: str = setting("adam", choices=("adam", "sgd"))`; numbers are > 0 otherwise.


PRESETS = {
    "full": Config(),
    "quick": Config(widths=(16, 64, 256), epochs=2, train_size=5_000, test_size=2_000),
}


def run(cfg: Config, ctx: RunContext) -> None:
    # Each entry is (a factory building the model, the params that tell it apart); train_classifiers
    # seeds, trains and logs each as a child run, and reuses any whose identical config already finished.
    ctx.train_classifiers({f"width{width}": (lambda width=width: mlp((784, width, 10)),
                                             {"width": width, "widths": describe((784, width, 10))})
                           for width in cfg.widths}, cfg)
'''

_MNIST_ANALYSIS = '''\
"""$name figures: final train and test accuracy against the hidden width.

A child's latest metric is its value at the highest step, i.e. the last
epoch's full-set evaluation, so no metric history is read.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from mlflow.entities import Run

from hw1track.reporting.plotting import subplots
from hw1track.tracking.query import StoreReader

SPLITS = {"train": ("o-", "tab:blue"), "test": ("s--", "tab:orange")}


def figures(reader: StoreReader, parent: Run) -> dict[str, Figure]:
    children = sorted(reader.children(parent), key=lambda run: int(run.data.params["width"]))
    widths = [int(run.data.params["width"]) for run in children]
    first = children[0].data.params
    recipe = (f"MLP 784-width-10; Adam {first['lr']}, batch {first['batch_size']}, "
              f"{first['epochs']} epochs on {first['n_train']} training images")
    fig, ax = subplots(width=7.0, height=4.5)
    for split, (style, color) in SPLITS.items():
        ax.plot(widths, [run.data.metrics[f"{split}_acc"] for run in children], style, color=color, label=split)
    ax.set(xscale="log", xlabel="hidden width (units, log scale)", ylabel="accuracy at the last epoch (fraction)",
           title=f"MNIST accuracy vs hidden width\\n{recipe}")
    ax.set_xticks(widths, [str(width) for width in widths])
    ax.set_xticks([], minor=True)  # the widths themselves, not powers of ten
    ax.legend(title="full-set evaluation")
    return {"accuracy_vs_width": fig}
'''

_MNIST_TEST = '''\
"""$name: one child run per width with per-epoch metrics and weights, and its figure drawn from the store."""

import matplotlib.pyplot as plt

from conftest import run_quick
from runs import $name

TINY = ("epochs=1", "train_size=500", "test_size=200")
METRICS = ["train_loss", "test_loss", "train_acc", "test_acc"]


def test_one_child_per_width_with_per_epoch_metrics_and_weights(store_uri, reader):
    parent = reader.client.get_run(run_quick("$name", store_uri, *TINY))
    children = reader.children(parent)
    assert [int(child.data.params["width"]) for child in children] == list($name.PRESETS["quick"].widths)
    for child in children:
        assert child.data.params["n_train"] == "500" and child.data.params["epochs"] == "1"
        for key in METRICS:
            # step 0 is the initial weights, step 1 the one epoch
            assert [m.step for m in reader.client.get_metric_history(child.info.run_id, key)] == [0, 1], key
        assert 0.0 <= child.data.metrics["test_acc"] <= 1.0
        assert reader.artifacts(child, "weights") == ["weights/final.pt"]


def test_the_figure_is_drawn_from_the_store(store_uri, reader):
    from analysis import $name as analysis

    parent = reader.client.get_run(run_quick("$name", store_uri, *TINY))
    drawn = analysis.figures(reader, parent)
    assert set(drawn) == {"accuracy_vs_width"}
    (axes,) = drawn["accuracy_vs_width"].axes
    assert axes.get_title() and axes.get_xlabel() and axes.get_ylabel()
    test_line = next(line for line in axes.lines if line.get_label() == "test")
    assert list(test_line.get_xdata()) == sorted($name.PRESETS["quick"].widths)
    plt.close("all")
'''

_SYNTHETIC_RUN = '''\
"""$name: how closely a one-hidden-layer net fits a 1-D function as its width grows.

One MLP 1-`width`-1 per value of `widths` is fitted by full-batch Adam to
`target` on `n_points` points of (0, 1]. Each is a child run with param `width`
and its per-epoch MSE (`train_loss`); analysis/$name.py draws the final MSE
against the width. The first line above is what `hw1track list` shows: make
it say what your experiment asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw1track.config import SWEEP, setting
from hw1track.study.context import RunContext
from hw1track.training.models import describe, mlp, seeded_model
from hw1track.training.targets import TARGETS, sample_target
from hw1track.training.tasks import REGRESSION

DATA = "synthetic"


@dataclass(frozen=True)
class Config:
    # The swept knob: one child run per value; `--set widths=8,128` changes it from the command line.
    # SWEEP: each child carries its own width, so adding a width trains only the new model.
    widths: tuple[int, ...] = setting((4, 16, 64, 256), role=SWEEP)
    target: str = setting("sinc", choices=tuple(TARGETS))
    n_points: int = 1000
    epochs: int = 5000
    lr: float = 1e-3
    seed: int = setting(0, minimum=0)


PRESETS = {
    "full": Config(),
    "quick": Config(widths=(4, 16, 64), epochs=500),
}


def run(cfg: Config, ctx: RunContext) -> None:
    x, y = sample_target(cfg.target, cfg.n_points)
    x, y = x.to(ctx.device), y.to(ctx.device)
    for m, width in enumerate(cfg.widths):
        seed = cfg.seed + m  # each model its own initialisation, logged as the child's `seed`
        model = seeded_model(lambda: mlp((1, width, 1)), seed, ctx.device)
        # train_model logs the standard params, per-epoch metrics and final weights, and reuses a
        # finished run of the identical config instead of training it again
        ctx.train_model(f"width{width}", model, seed=seed, train=(x, y), eval_splits={"train": (x, y)},
                        task=REGRESSION, epochs=cfg.epochs, batch_size=cfg.n_points, lr=cfg.lr,
                        params={"width": width, "widths": describe((1, width, 1)), "target": cfg.target})
'''

_SYNTHETIC_ANALYSIS = '''\
"""$name figures: the final mean squared error of the fit against the hidden width.

A child's latest metric is its value at the highest step, i.e. the last
epoch's full-batch evaluation, so no metric history is read.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from mlflow.entities import Run

from hw1track.reporting.plotting import subplots
from hw1track.tracking.query import StoreReader


def figures(reader: StoreReader, parent: Run) -> dict[str, Figure]:
    children = sorted(reader.children(parent), key=lambda run: int(run.data.params["width"]))
    widths = [int(run.data.params["width"]) for run in children]
    first = children[0].data.params
    recipe = (f"MLP 1-width-1 fitting {first['target']} on {first['n_train']} points; "
              f"full-batch Adam {first['lr']}, {first['epochs']} epochs")
    fig, ax = subplots(width=7.0, height=4.5)
    ax.plot(widths, [run.data.metrics["train_loss"] for run in children], "o-",
            label=f"on the {first['n_train']} training points")
    ax.set(xscale="log", yscale="log", xlabel="hidden width (units, log scale)",
           ylabel="mean squared error at the last epoch (log scale)", title=f"Fit vs hidden width\\n{recipe}")
    ax.set_xticks(widths, [str(width) for width in widths])
    ax.set_xticks([], minor=True)  # the widths themselves, not powers of ten
    ax.legend()
    return {"mse_vs_width": fig}
'''

_SYNTHETIC_TEST = '''\
"""$name: one child run per width with its per-epoch MSE and weights, and its figure drawn from the store."""

import matplotlib.pyplot as plt

from conftest import run_quick
from runs import $name

EPOCHS = 20
TINY = (f"epochs={EPOCHS}",)


def test_one_child_per_width_with_per_epoch_mse_and_weights(store_uri, reader):
    parent = reader.client.get_run(run_quick("$name", store_uri, *TINY))
    children = reader.children(parent)
    assert [int(child.data.params["width"]) for child in children] == list($name.PRESETS["quick"].widths)
    for child in children:
        steps = [m.step for m in reader.client.get_metric_history(child.info.run_id, "train_loss")]
        assert steps == list(range(EPOCHS + 1))  # step 0 is the initial weights
        assert child.data.metrics["train_loss"] >= 0.0
        assert reader.artifacts(child, "weights") == ["weights/final.pt"]


def test_the_figure_is_drawn_from_the_store(store_uri, reader):
    from analysis import $name as analysis

    parent = reader.client.get_run(run_quick("$name", store_uri, *TINY))
    drawn = analysis.figures(reader, parent)
    assert set(drawn) == {"mse_vs_width"}
    (axes,) = drawn["mse_vs_width"].axes
    assert axes.get_title() and axes.get_xlabel() and axes.get_ylabel()
    assert list(axes.lines[0].get_xdata()) == sorted($name.PRESETS["quick"].widths)
    plt.close("all")
'''

TEMPLATES = {
    "mnist": (_MNIST_RUN, _MNIST_ANALYSIS, _MNIST_TEST),
    "synthetic": (_SYNTHETIC_RUN, _SYNTHETIC_ANALYSIS, _SYNTHETIC_TEST),
}
RESERVED = {"all"}  # `hw1track run all` means every experiment


@dataclass(frozen=True)
class Written:
    """The files a new experiment consists of, in the order a newcomer reads them."""

    run: Path
    analysis: Path
    test: Path


def project_root() -> Path:
    """The source tree the experiments are discovered in: the folder holding `runs/`.

    An installed (non-editable) copy has no tests/ or pyproject.toml beside it,
    and files written into site-packages would be lost at the next install.
    """
    root = experiments_folder().parent
    if not (root / "pyproject.toml").is_file():
        raise Hw1Error(f"no project source tree at {root} (runs/ without pyproject.toml beside it); "
                       f"run `hw1track new` from an editable install (pip install -e .)")
    return root


def paths_for(name: str, root: Path) -> Written:
    return Written(root / "runs" / f"{name}.py", root / "analysis" / f"{name}.py", root / "tests" / f"test_{name}.py")


def check_name(name: str, root: Path) -> Written:
    """The files `name` would get; a `UsageError` for a name that cannot be a new experiment."""
    if not name.isidentifier():
        raise UsageError(f"{name!r} is not a valid Python identifier (use letters, digits and _, e.g. part1_3d)")
    if keyword.iskeyword(name):
        raise UsageError(f"{name!r} is a Python keyword, which `import` cannot name; choose another name")
    if name.startswith("_"):
        raise UsageError(f"{name!r} starts with _, and modules named so are not discovered as experiments")
    if name in RESERVED:
        raise UsageError(f"{name!r} is reserved: `hw1track run all` runs every experiment")
    paths = paths_for(name, root)
    for path in (paths.run, paths.analysis, paths.test):
        if path.exists():
            raise UsageError(f"{path.relative_to(root)} already exists; choose another name (nothing is overwritten)")
    # `from runs import NAME` would work, but a module that shadows an importable one confuses every
    # notebook and script that puts runs/ or analysis/ on its path.
    if importlib.util.find_spec(name) is not None:
        raise UsageError(f"{name!r} is the name of an importable module; choose another name")
    return paths


def create(name: str, data: str = "mnist", root: Path | None = None) -> Written:
    """Write the run module, the analysis module and the test of experiment `name`; never overwrites."""
    if data not in TEMPLATES:
        raise UsageError(f"unknown data {data!r} (known: {', '.join(TEMPLATES)})")
    root = root or project_root()
    paths = check_name(name, root)
    texts = [Template(template).substitute(name=name) for template in TEMPLATES[data]]
    paths.test.parent.mkdir(exist_ok=True)
    written: list[Path] = []
    try:
        for path, text in zip((paths.run, paths.analysis, paths.test), texts):
            with path.open("x", encoding="utf-8") as file:  # "x": a file that appeared meanwhile is kept
                file.write(text)
            written.append(path)
    except FileExistsError as exc:
        for path in written:  # half an experiment would break discovery for everyone
            path.unlink()
        raise UsageError(f"{Path(exc.filename).relative_to(root)} already exists; nothing was written") from None
    return paths
