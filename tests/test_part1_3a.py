"""part1_3a: shuffled training labels, training until memorised, and the random-vs-true figure."""

import pytest
import torch
from conftest import hw1track, run_quick

from hw1track.tracking.query import StoreReader
from hw1track.training.data import load_mnist, subset
from hw1track.training.evaluation import evaluate
from hw1track.training.labels import permuted_labels
from hw1track.training.models import mlp
from hw1track.training.tasks import CLASSIFICATION
from runs import part1_3a

MILESTONE = "epochs_to_90pct_train_acc"
TRAIN_SIZE = 500  # half the quick preset's images: memorised in about 15 epochs, twice as fast


def test_permuted_labels_shuffle_the_training_labels_by_seed_and_leave_the_input_alone():
    labels = load_mnist().train_y
    original = labels.clone()
    shuffled = permuted_labels(labels, seed=0)

    assert torch.equal(labels, original)
    assert torch.equal(torch.bincount(shuffled, minlength=10), torch.bincount(labels, minlength=10))
    assert torch.equal(shuffled.sort().values, labels.sort().values)
    assert (shuffled == labels).float().mean() < 0.15  # about 1/10 agree by chance, not all
    assert torch.equal(permuted_labels(labels, seed=0), shuffled)
    assert not torch.equal(permuted_labels(labels, seed=1), shuffled)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run shared by the checks below: training to memorisation is the slow part."""
    folder = tmp_path_factory.mktemp("part1_3a")
    store_uri = f"sqlite:///{folder / 'mlflow.db'}"
    parent_id = run_quick("part1_3a", store_uri, f"train_size={TRAIN_SIZE}")
    reader = StoreReader(store_uri)
    return folder, store_uri, reader, reader.client.get_run(parent_id)


def _by_mode(reader, parent):
    return {child.data.params["label_mode"]: child for child in reader.children(parent, status=None)}


@pytest.mark.slow
def test_quick_run_memorises_random_labels_and_stops_at_the_goal(quick_run):
    _, _, reader, parent = quick_run
    cfg = part1_3a.PRESETS["quick"]
    children = _by_mode(reader, parent)
    assert set(children) == {"random", "true"}
    assert children["random"].data.params["label_seed"] == str(cfg.label_seed)
    assert "label_seed" not in children["true"].data.params

    for mode, child in children.items():
        assert child.info.status == "FINISHED"
        history = reader.history([child], ["train_acc"])
        steps, accuracy = history.step.tolist(), history.value.tolist()
        assert steps == list(range(len(steps)))
        # stopped after the first epoch at the goal, and every epoch up to it was flushed
        reached = [step for step, acc in zip(steps, accuracy) if acc >= cfg.stop_train_acc]
        assert reached and reached[0] == steps[-1] < cfg.max_epochs, mode
        first_90 = next(step for step, acc in zip(steps, accuracy) if acc >= part1_3a.MILESTONE_TRAIN_ACC)
        assert child.data.metrics[MILESTONE] == first_90

    random, true = children["random"].data.metrics, children["true"].data.metrics
    assert random["train_acc"] >= 0.9 and random["test_acc"] < 0.3
    assert true["test_acc"] > 0.8
    assert random[MILESTONE] > true[MILESTONE]


@pytest.mark.slow
def test_only_the_training_labels_are_random(quick_run):
    """The logged weights reproduce the logged metrics: train on the shuffled labels, test on the true ones."""
    _, _, reader, parent = quick_run
    cfg = part1_3a.PRESETS["quick"]
    mnist = load_mnist()
    images, true_labels = subset(mnist.train_x, mnist.train_y, TRAIN_SIZE, cfg.seed)
    test = subset(mnist.test_x, mnist.test_y, cfg.test_size, cfg.seed)
    child = _by_mode(reader, parent)["random"]
    model = mlp(cfg.widths)
    model.load_state_dict(torch.load(reader.download(child, "weights/final.pt"), weights_only=True))

    shuffled = permuted_labels(true_labels, int(child.data.params["label_seed"]))
    on_shuffled = evaluate(model, (images, shuffled), CLASSIFICATION)
    assert on_shuffled["acc"] == child.data.metrics["train_acc"]
    assert on_shuffled["loss"] == pytest.approx(child.data.metrics["train_loss"], rel=1e-5)
    assert evaluate(model, test, CLASSIFICATION)["acc"] == child.data.metrics["test_acc"]
    # what it fitted is the shuffle, not the digits
    assert evaluate(model, (images, true_labels), CLASSIFICATION)["acc"] < 0.3


@pytest.mark.slow
def test_figure_draws_both_label_modes_from_the_store_in_a_fresh_process(quick_run):
    folder, store_uri, reader, parent = quick_run
    out = folder / "figures"
    drawn = hw1track("analyze", "part1_3a", "--tracking-uri", store_uri, "--out", str(out), cwd=folder)
    assert drawn.returncode == 0, drawn.stderr
    assert [p.name for p in (out / "part1_3a").iterdir()] == ["random_labels.png"]
    logged = {a.path for a in reader.client.list_artifacts(parent.info.run_id, "figures")}
    assert logged == {"figures/random_labels.png"}

    from analysis import part1_3a as analysis

    figure = analysis.figures(reader, parent)["random_labels"]
    loss_axes, accuracy_axes = figure.axes
    labels = {line.get_label() for line in loss_axes.lines}
    assert {"random labels, train", "true labels, train", "random labels, test (true labels)",
            "true labels, test (true labels)"} <= labels
    children = _by_mode(reader, parent)
    factor = children["random"].data.metrics[MILESTONE] / children["true"].data.metrics[MILESTONE]
    assert f"{factor:.0f}× slower" in loss_axes.get_title()


class _Recorder:
    """A metric sink that keeps what it is given, to check what the training loop reports."""

    def __init__(self):
        self.metrics: dict[str, dict[int, float]] = {}

    def log_metrics(self, metrics, step):
        for key, value in metrics.items():
            self.metrics.setdefault(key, {})[step] = value

    def log_series(self, series, first_step):
        for key, values in series.items():
            for i, value in enumerate(values):
                self.log_metrics({key: value}, first_step + i)


def test_annealed_learning_rate_follows_a_cosine_to_zero_over_the_epochs():
    import math

    from hw1track.training.fit import fit

    mnist = load_mnist()
    train = subset(mnist.train_x, mnist.train_y, 256, seed=0)
    torch.manual_seed(0)
    model = mlp((784, 16, 10))
    epochs, lr = 4, 3e-4
    sink = _Recorder()
    fit(model, train, task=CLASSIFICATION, epochs=epochs, batch_size=64, lr=lr, seed=0,
        eval_splits={"train": train}, sink=sink, anneal_lr=True)

    expected = {epoch: lr * (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2 for epoch in range(1, epochs + 1)}
    assert sink.metrics["lr"] == pytest.approx(expected)
    assert sink.metrics["lr"][1] == lr and sink.metrics["lr"][epochs] < lr / 5
