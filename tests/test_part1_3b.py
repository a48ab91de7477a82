"""part1_3b: a sweep over the dense width only, with P over two decades, and figures against P."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import check_claim, check_figures_name_the_image_set, hw1track, run_quick
from scipy import stats

from analysis import part1_3b as analysis
from hw1track.reporting.plotting import seeds_text
from hw1track.stats.claims import INCONCLUSIVE, from_json
from hw1track.study.discovery import get_experiment
from hw1track.tracking.names import CLAIMS_ARTIFACT, METRIC_EPOCHS_TRAINED, METRIC_STOPPED_BY_RULE
from hw1track.tracking.query import by_group, replicate
from hw1track.training.data import load_mnist, subset
from hw1track.training.evaluation import evaluate_splits
from hw1track.training.fit import fit
from hw1track.training.milestones import LossPlateau
from hw1track.training.models import cnn, n_params
from hw1track.training.sinks import NullSink
from hw1track.training.tasks import CLASSIFICATION
from runs import part1_3b

# params that legitimately differ between the models of the sweep and between the replicates of one model
VARYING = {"model", "width", "n_params", "seed", "replicate"}
CLAIM_IDS = ["part1_3b.test_acc_rises_with_params", "part1_3b.generalisation_gap_grows_with_params"]


def test_default_widths_span_two_decades_of_parameters():
    cfg = part1_3b.PRESETS["full"]
    sizes = [n_params(cnn(cfg.channels, (width,))) for width in cfg.widths]
    assert len(set(cfg.widths)) == len(cfg.widths) >= 10
    assert sizes == sorted(sizes) and sizes[0] <= 1.1e4 and sizes[-1] >= 1.5e6
    assert part1_3b.PRESETS["quick"].widths == cfg.widths


@pytest.mark.slow
def test_quick_sweep_varies_only_the_dense_width_and_logs_full_set_final_metrics(store_uri, reader, tmp_path):
    n_train, n_test, epochs, n_seeds = 600, 500, 1, 2
    parent_id = run_quick("part1_3b", store_uri, f"epochs={epochs}", f"train_size={n_train}", f"test_size={n_test}",
                          seeds=n_seeds)
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    cfg = part1_3b.PRESETS["quick"]
    assert len(children) == len(cfg.widths) * n_seeds and len(cfg.widths) >= 10

    groups = sorted(by_group(children).values(), key=lambda runs: int(runs[0].data.params["n_params"]))
    widths = [int(runs[0].data.params["width"]) for runs in groups]
    sizes = [int(runs[0].data.params["n_params"]) for runs in groups]
    assert widths == list(cfg.widths) and len(set(widths)) == len(widths)
    assert all(sorted(replicate(run) for run in runs) == list(range(n_seeds)) for runs in groups)
    assert all({run.data.params["width"] for run in runs} == {runs[0].data.params["width"]} for runs in groups)
    assert math.log10(max(sizes) / min(sizes)) >= 2
    shared = [{k: v for k, v in child.data.params.items() if k not in VARYING} for child in children]
    assert all(params == shared[0] for params in shared)
    assert shared[0]["epochs"] == str(epochs) and shared[0]["n_train"] == str(n_train)
    assert len({child.data.params["seed"] for child in children}) == len(children)

    mnist = load_mnist()
    splits = {"train": subset(mnist.train_x, mnist.train_y, n_train, 0),
              "test": subset(mnist.test_x, mnist.test_y, n_test, 0)}
    conv_shapes = set()
    for child in children:
        width, size = int(child.data.params["width"]), int(child.data.params["n_params"])
        history = reader.history([child], ["train_loss", "test_loss", "train_acc", "test_acc"])
        assert set(history.groupby("key").step.max()) == {epochs}
        # the logged weights are the model the params describe, and its last logged metrics are
        # full-set evaluations of those weights, not running minibatch averages
        state = torch.load(reader.download(child, "weights/final.pt"), weights_only=True)
        model = cnn(part1_3b.PRESETS["quick"].channels, (width,))
        model.load_state_dict(state)
        assert n_params(model) == size
        conv_shapes.add(tuple(state["0.weight"].shape))
        logged = child.data.metrics
        for key, value in evaluate_splits(model, splits, CLASSIFICATION).items():
            assert logged[key] == pytest.approx(value, rel=1e-5), (width, key)
    assert len(conv_shapes) == 1

    out = tmp_path / "figures"
    drawn = hw1track("analyze", "part1_3b", "--tracking-uri", store_uri, "--out", str(out), cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    names = {"loss_vs_params.png", "accuracy_vs_params.png", "epochs_vs_params.png"}
    assert {p.name for p in (out / "part1_3b").iterdir()} == names
    assert {a.path for a in reader.client.list_artifacts(parent_id, "figures")} == {f"figures/{n}" for n in names}
    logged_claims = from_json(reader.download(parent, CLAIMS_ARTIFACT).read_text())
    assert [claim.id for claim in logged_claims] == CLAIM_IDS
    assert all(claim.id in drawn.stdout for claim in logged_claims)

    figures = analysis.figures(reader, parent)
    check_figures_name_the_image_set(figures)
    # each width is one point per split: the mean of its seeds with a 95 % t interval as its error bar
    (axes,) = figures["loss_vs_params"].axes
    assert axes.get_xscale() == "log" and seeds_text(n_seeds) in axes.get_title()
    bars = {container.get_label(): container for container in axes.containers}
    train_bars = next(bar for label, bar in bars.items() if label.startswith("train") and f"{n_seeds} seeds" in label)
    losses = np.array([[run.data.metrics["train_loss"] for run in runs] for runs in groups])
    logs = np.log10(losses)
    low, high = stats.t.interval(0.95, n_seeds - 1, loc=logs.mean(axis=1), scale=stats.sem(logs, axis=1))
    assert train_bars.lines[0].get_ydata() == pytest.approx(10 ** logs.mean(axis=1), rel=1e-9)
    assert train_bars.lines[0].get_xdata() == pytest.approx(sizes, rel=0.05)  # train and test sit either side of P
    segments = train_bars.lines[2][0].get_segments()
    assert [segment[0][1] for segment in segments] == pytest.approx(10 ** low, rel=1e-9)
    assert [segment[1][1] for segment in segments] == pytest.approx(10 ** high, rel=1e-9)
    (accuracy_axes,) = figures["accuracy_vs_params"].axes
    assert len(accuracy_axes.containers) == 2 and seeds_text(n_seeds) in accuracy_axes.get_title()
    for container in accuracy_axes.containers:  # no interval of an accuracy reaches past 0 or 1
        ends = np.concatenate([segment[:, 1] for segment in container.lines[2][0].get_segments()])
        assert ends.min() >= 0 and ends.max() <= 1

    # the claims fit each seed's trend against log10 P, then average the seeds' slopes
    claims = {claim.id: claim for claim in analysis.claims(reader, parent)}
    assert list(claims) == CLAIM_IDS
    per_seed = _per_seed(children)
    expected = {
        "part1_3b.test_acc_rises_with_params": [
            stats.linregress(np.log10([int(r.data.params["n_params"]) for r in runs]),
                             [r.data.metrics["test_acc"] for r in runs]).slope for runs in per_seed],
        "part1_3b.generalisation_gap_grows_with_params": [
            stats.linregress(np.log10([int(r.data.params["n_params"]) for r in runs]),
                             [r.data.metrics["test_loss"] - r.data.metrics["train_loss"] for r in runs]).slope
            for runs in per_seed],
    }
    for claim_id, claim in claims.items():
        check_claim(claim, n_seeds)
        assert claim.effect == pytest.approx(np.mean(expected[claim_id]), rel=1e-9)
    assert "test minus train cross-entropy" in claims["part1_3b.generalisation_gap_grows_with_params"].statement
    assert claims == {claim.id: claim for claim in logged_claims}


@pytest.mark.slow
def test_one_seed_draws_plain_lines_and_leaves_the_claims_without_verdict(store_uri, reader):
    parent_id = run_quick("part1_3b", store_uri, "epochs=1", "train_size=600", "test_size=300", "widths=6,46,360",
                          seeds=1)
    parent = reader.client.get_run(parent_id)
    by_size = sorted(reader.children(parent), key=lambda child: int(child.data.params["n_params"]))
    assert len(by_size) == 3

    for name, metric in (("loss_vs_params", "loss"), ("accuracy_vs_params", "acc")):
        (axes,) = analysis.figures(reader, parent)[name].axes
        assert not axes.containers and seeds_text(1) in axes.get_title()  # no error bars: one seed has no spread
        for split in ("train", "test"):
            line = next(line for line in axes.lines if line.get_label() == split)
            assert list(line.get_xdata()) == [int(child.data.params["n_params"]) for child in by_size]
            assert list(line.get_ydata()) == [child.data.metrics[f"{split}_{metric}"] for child in by_size]

    claims = analysis.claims(reader, parent)
    assert [claim.id for claim in claims] == CLAIM_IDS
    for claim in claims:
        check_claim(claim, 1)
        assert claim.verdict == INCONCLUSIVE and math.isnan(claim.ci_low) and "one seed" in claim.detail


@pytest.mark.slow
def test_each_width_stops_where_the_plateau_rule_says_and_logs_that_epoch(store_uri, reader):
    # a coarse rule on 600 images: no model can gain 0.3 x ln 10 nats per epoch for long, so all stop early
    window, fraction, cap = 1, 0.3, 8
    parent_id = run_quick("part1_3b", store_uri, f"epochs={cap}", "train_size=600", "test_size=300",
                          "widths=6,360", f"plateau_window={window}", f"plateau_fraction={fraction}", seeds=1)
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    assert len(children) == 2
    for child in children:
        history = reader.history([child], ["train_loss"]).sort_values("step")
        assert list(history.step) == list(range(len(history)))
        rule = LossPlateau(window, fraction)
        stops = [bool(rule({"train_loss": torch.tensor([loss])})[0]) for loss in history.value]
        # the rule replayed on the logged losses stops at the last logged epoch, and not before it
        assert stops[-1] and not any(stops[:-1])
        last = int(history.step.max())
        assert last < cap and child.data.metrics[METRIC_EPOCHS_TRAINED] == last
        assert child.data.metrics[METRIC_STOPPED_BY_RULE] == 1.0
        assert child.data.params["plateau_window"] == str(window)
    (axes,) = analysis.figures(reader, parent)["epochs_vs_params"].axes
    assert "cap 8" in axes.get_title() and axes.get_ylabel() == "epochs trained"


@pytest.mark.slow
def test_without_a_window_every_width_trains_the_fixed_epochs(store_uri, reader):
    parent_id = run_quick("part1_3b", store_uri, "epochs=2", "train_size=300", "test_size=300", "widths=6",
                          "plateau_window=0", seeds=1)
    parent = reader.client.get_run(parent_id)
    (child,) = reader.children(parent)
    assert reader.history([child], ["train_loss"]).step.max() == 2
    assert METRIC_EPOCHS_TRAINED not in child.data.metrics
    figures = analysis.figures(reader, parent)
    assert set(figures) == {"loss_vs_params", "accuracy_vs_params"}
    assert figures["loss_vs_params"].axes[0].get_title().endswith("300 training images\n2 epochs")


def _per_seed(children) -> list[list]:
    """The models of each replicate, one list per replicate."""
    return [[child for child in children if replicate(child) == index]
            for index in sorted({replicate(child) for child in children})]


def test_conv_models_train_channels_last_and_their_weights_load_into_a_plain_model():
    """fit switches conv weights to channels-last for speed; what it saves must mean the same in NCHW."""
    mnist = load_mnist()
    train = (mnist.train_x[:512], mnist.train_y[:512])
    model = cnn((4, 8), (16,))  # the second conv has 4 input channels, so its two layouts differ
    fit(model, train, task=CLASSIFICATION, epochs=1, batch_size=128, lr=1e-3, seed=0, eval_splits={},
        sink=NullSink())
    assert model[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[3].weight.is_contiguous()

    plain = cnn((4, 8), (16,))
    plain.load_state_dict(model.state_dict())
    assert plain[3].weight.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(plain(train[0][:256]), model(train[0][:256]), rtol=1e-5, atol=1e-5)


def test_pooling_before_the_relu_trains_the_textbook_cnn_bit_for_bit():
    """cnn() pools before its ReLU for speed; trained side by side, the textbook order must match it exactly."""
    mnist = load_mnist()
    train, test = (mnist.train_x[:1024], mnist.train_y[:1024]), (mnist.test_x[:512], mnist.test_y[:512])
    assert [type(layer) for layer in cnn((4, 8), (16,))[:3]] == [torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.ReLU]

    def textbook(channels, dense):
        layers = list(cnn(channels, dense))
        for i, layer in enumerate(layers[:-1]):
            if isinstance(layer, torch.nn.MaxPool2d):
                layers[i], layers[i + 1] = layers[i + 1], layer
        return torch.nn.Sequential(*layers)

    finals, weights = [], []
    for factory in (cnn, textbook):
        torch.manual_seed(0)
        model = factory((4, 8), (16,))
        finals.append(fit(model, train, task=CLASSIFICATION, epochs=2, batch_size=64, lr=1e-3, seed=0,
                          eval_splits={"train": train, "test": test}, sink=NullSink()))
        weights.append(model.state_dict())
    assert isinstance(textbook((4,), (8,))[1], torch.nn.ReLU)
    assert finals[0] == finals[1] and finals[0]["train_loss"] < math.log(10)
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_fashion_mnist_caps_the_stopping_rule_later_and_mnist_keeps_its_cap():
    experiment = get_experiment("part1_3b")
    mnist, fashion = experiment.config("full"), experiment.config("full", ["dataset=fashion-mnist"])
    assert (mnist.epochs, fashion.epochs, fashion.dataset) == (30, 45, "fashion-mnist")
    assert dataclasses.replace(fashion, dataset="mnist", epochs=30) == mnist  # nothing else differs
    assert experiment.config("quick", ["dataset=fashion-mnist"]).epochs == experiment.config("quick").epochs
