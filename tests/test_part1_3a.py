"""part1_3a: shuffled training labels, training until memorised, the random-vs-true figure over seeds, and claims."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import hw1track, run_quick
from matplotlib.collections import PolyCollection
from mlflow.entities import Metric, Param, Run, RunData

from analysis import part1_3a as analysis
from hw1track.stats.claims import VERDICTS, verdict
from hw1track.stats.intervals import mean_interval
from hw1track.study.discovery import get_experiment
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


SEEDS = 2
CLAIM_IDS = ["part1_3a.random_labels_memorised", "part1_3a.random_labels_test_at_chance",
             "part1_3a.memorising_is_slower"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run of two replicates shared by the checks below: training to memorisation is the slow part."""
    folder = tmp_path_factory.mktemp("part1_3a")
    store_uri = f"sqlite:///{folder / 'mlflow.db'}"
    parent_id = run_quick("part1_3a", store_uri, f"train_size={TRAIN_SIZE}", seeds=SEEDS)
    reader = StoreReader(store_uri)
    return folder, store_uri, reader, reader.client.get_run(parent_id)


@pytest.fixture(scope="module")
def single_seed_run(tmp_path_factory):
    """The same study with one replicate, whose figure must look as it did before replicates existed."""
    store_uri = f"sqlite:///{tmp_path_factory.mktemp('part1_3a_one_seed') / 'mlflow.db'}"
    parent_id = run_quick("part1_3a", store_uri, f"train_size={TRAIN_SIZE}", seeds=1)
    reader = StoreReader(store_uri)
    return reader, reader.client.get_run(parent_id)


def _pairs(reader, parent):
    """replicate -> label mode -> run, every status included so that a failed run is seen."""
    pairs = {}
    for child in reader.children(parent, status=None):
        pairs.setdefault(int(child.data.params["replicate"]), {})[child.data.params["label_mode"]] = child
    return pairs


@pytest.mark.slow
def test_quick_run_memorises_random_labels_and_stops_at_the_goal(quick_run):
    _, _, reader, parent = quick_run
    cfg = part1_3a.PRESETS["quick"]
    pairs = _pairs(reader, parent)
    assert sorted(pairs) == list(range(SEEDS))
    seeds = {index: {child.data.params["seed"] for child in children.values()} for index, children in pairs.items()}
    # the two label modes of a replicate share their seed (paired); replicates differ
    assert all(len(shared) == 1 for shared in seeds.values()) and len(set.union(*seeds.values())) == SEEDS

    for children in pairs.values():
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
    shuffles = []
    for children in _pairs(reader, parent).values():
        child = children["random"]
        model = mlp(cfg.widths)
        model.load_state_dict(torch.load(reader.download(child, "weights/final.pt"), weights_only=True))

        shuffled = permuted_labels(true_labels, int(child.data.params["label_seed"]))
        shuffles.append(shuffled)
        on_shuffled = evaluate(model, (images, shuffled), CLASSIFICATION)
        assert on_shuffled["acc"] == child.data.metrics["train_acc"]
        assert on_shuffled["loss"] == pytest.approx(child.data.metrics["train_loss"], rel=1e-5)
        assert evaluate(model, test, CLASSIFICATION)["acc"] == child.data.metrics["test_acc"]
        # what it fitted is the shuffle, not the digits
        assert evaluate(model, (images, true_labels), CLASSIFICATION)["acc"] < 0.3
    # replicates differ in their seed only: every one memorises the same shuffle
    assert all(torch.equal(shuffle, shuffles[0]) for shuffle in shuffles)


def _ratios(pairs):
    return [children["random"].data.metrics[MILESTONE] / children["true"].data.metrics[MILESTONE]
            for children in pairs.values()]


@pytest.mark.slow
def test_figure_shows_the_spread_of_the_seeds_from_the_store_in_a_fresh_process(quick_run):
    folder, store_uri, reader, parent = quick_run
    out = folder / "figures"
    drawn = hw1track("analyze", "part1_3a", "--tracking-uri", store_uri, "--out", str(out), cwd=folder)
    assert drawn.returncode == 0, drawn.stderr
    assert [p.name for p in (out / "part1_3a").iterdir()] == ["random_labels.png"]
    logged = {a.path for a in reader.client.list_artifacts(parent.info.run_id, "figures")}
    assert logged == {"figures/random_labels.png"}

    # the claims went to the parent run too, and to the terminal
    logged_claims = json.loads(reader.download(parent, "claims.json").read_text())
    assert {claim["id"] for claim in logged_claims} == set(CLAIM_IDS)
    assert all(claim_id in drawn.stdout for claim_id in CLAIM_IDS)

    figure = analysis.figures(reader, parent)["random_labels"]
    loss_axes, accuracy_axes = figure.axes
    for axes in (loss_axes, accuracy_axes):
        # a 95 % band per label mode and split
        assert len([c for c in axes.collections if isinstance(c, PolyCollection)]) == 4
    # each seed's own thin curve behind each of the four means
    assert len(loss_axes.lines) == 4 * (SEEDS + 1)
    legend = {text.get_text() for text in figure.legends[0].get_texts()}
    assert {"random labels, train", "true labels, train", "random labels, test (true labels)",
            "true labels, test (true labels)", f"mean of {SEEDS} seeds (loss: geometric mean)"} <= legend
    title = loss_axes.get_title()
    assert f"{SEEDS} seeds per label mode" in title
    interval = mean_interval(_ratios(_pairs(reader, parent)))
    assert f"{interval.mean:.1f}× slower (95% CI {interval.low:.1f}–{interval.high:.1f}" in title


@pytest.mark.slow
def test_figure_with_one_seed_looks_as_before_replicates(single_seed_run):
    reader, parent = single_seed_run
    figure = analysis.figures(reader, parent)["random_labels"]
    loss_axes = figure.axes[0]
    assert not [c for axes in figure.axes for c in axes.collections if isinstance(c, PolyCollection)]
    assert {line.get_label() for line in loss_axes.lines} == {
        "random labels, train", "true labels, train", "random labels, test (true labels)",
        "true labels, test (true labels)"}
    assert "seed" not in loss_axes.get_title()
    assert len(loss_axes.lines) == 4
    (children,) = _pairs(reader, parent).values()
    (factor,) = _ratios({0: children})
    assert f"→ memorising is {factor:.0f}× slower" in loss_axes.get_title()


@pytest.mark.slow
def test_claims_carry_every_field_and_are_read_off_the_seeds(quick_run):
    _, _, reader, parent = quick_run
    stated = analysis.claims(reader, parent)
    claims = {claim.id: claim.as_dict() for claim in stated}
    assert list(claims) == CLAIM_IDS
    for claim in stated:
        assert {"id", "statement", "effect", "effect_name", "ci_low", "ci_high", "n_seeds", "verdict"} <= set(
            claim.as_dict())
        assert claim.statement and claim.effect_name
        assert claim.verdict in VERDICTS and claim.n_seeds == SEEDS
        if math.isnan(claim.ci_low):  # seeds that agree exactly (whole epochs often do): no interval, no verdict
            assert claim.verdict == "inconclusive"
        else:
            assert claim.ci_low <= claim.effect <= claim.ci_high

    pairs = _pairs(reader, parent)
    randoms = [children["random"].data.metrics for children in pairs.values()]
    memorised = claims["part1_3a.random_labels_memorised"]
    assert memorised["effect"] == pytest.approx(np.mean([m["train_acc"] for m in randoms]))
    expected = mean_interval([m["train_acc"] for m in randoms])
    assert memorised["verdict"] == ("supported" if expected.low > 0.9 else
                                    "not supported" if expected.high < 0.9 else "inconclusive")
    at_chance = claims["part1_3a.random_labels_test_at_chance"]
    assert at_chance["effect"] == pytest.approx(np.mean([m["test_acc"] for m in randoms]) - 0.1)
    # the margin is stated, and grows as the test set shrinks
    assert f"± {analysis.chance_margin(part1_3a.PRESETS['quick'].test_size):.3f}" in at_chance["statement"]
    assert analysis.chance_margin(1_000) > analysis.chance_margin(10_000) > analysis.CLASS_IMBALANCE_MARGIN
    slower = claims["part1_3a.memorising_is_slower"]
    assert slower["effect"] == pytest.approx(np.mean(_ratios(pairs)))
    slower_claim = next(claim for claim in stated if claim.id == "part1_3a.memorising_is_slower")
    assert slower["verdict"] == verdict(slower_claim.ci_low, slower_claim.ci_high, threshold=1.0)


@pytest.mark.slow
def test_a_slowdown_whose_random_labels_never_reached_90_percent_is_a_stated_lower_bound(single_seed_run):
    """Cut the random-label history short of its milestone: the ratio becomes last epoch / true epochs, said so."""
    reader, parent = single_seed_run
    (children,) = _pairs(reader, parent).values()
    random, true = children["random"], children["true"]
    last_before_90 = int(random.data.metrics[MILESTONE]) - 1
    assert last_before_90 >= 1
    unreached = Run(random.info, RunData(metrics=[Metric(k, v, 0, 0) for k, v in random.data.metrics.items()
                                                  if k != MILESTONE],
                                         params=[Param(k, v) for k, v in random.data.params.items()]))
    (slowdown,) = analysis.slowdowns({0: {"random": unreached, "true": true}},
                                     {random.info.run_id: last_before_90})
    assert slowdown.censored
    assert slowdown.ratio == last_before_90 / true.data.metrics[MILESTONE]
    assert f"below 90 % after {last_before_90} epochs" in analysis.slowdown_note(slowdown)


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


def test_fashion_mnist_memorises_on_a_longer_cosine_and_mnist_keeps_its_recipe():
    experiment = get_experiment("part1_3a")
    mnist, fashion = experiment.config("full"), experiment.config("full", ["dataset=fashion-mnist"])
    assert (mnist.dataset, mnist.max_epochs) == ("mnist", 80)
    assert (fashion.dataset, fashion.max_epochs) == ("fashion-mnist", 150)
    assert dataclasses.replace(fashion, dataset="mnist", max_epochs=80) == mnist  # nothing else differs
    assert experiment.config("full", ["dataset=fashion-mnist", "max_epochs=60"]).max_epochs == 60
