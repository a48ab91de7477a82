"""part1_3c_i: two batch sizes, one interpolation curve per seed that passes exactly through both trained models."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import check_claim, hw1track, run_quick
from matplotlib.collections import PolyCollection
from scipy import stats

from analysis import part1_3c_i as analysis
from hw1track.measures.interpolation import interpolate_state_dict
from hw1track.reporting.plotting import seeds_text
from hw1track.stats.claims import INCONCLUSIVE, from_json
from hw1track.tracking.names import CLAIMS_ARTIFACT
from hw1track.tracking.query import replicate
from hw1track.training.data import load_mnist, subset
from hw1track.training.evaluation import evaluate_splits
from hw1track.training.models import mlp
from hw1track.training.tasks import CLASSIFICATION
from runs import part1_3c_i

N_TRAIN, N_TEST = 1500, 400
# the documented columns of interpolation.csv, then the replicate each curve belongs to
COLUMNS = ["alpha", "train_loss", "test_loss", "train_acc", "test_acc", "replicate"]
CLAIM_IDS = ["part1_3c_i.loss_rises_between", "part1_3c_i.loss_rises_beyond"]


@pytest.mark.slow
def test_quick_run_logs_the_curve_through_both_models_and_analysis_draws_it(store_uri, reader, tmp_path):
    n_seeds = 2
    parent_id = run_quick("part1_3c_i", store_uri, "epochs=1", f"train_size={N_TRAIN}", f"test_size={N_TEST}",
                          seeds=n_seeds)
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    pairs = _pairs(children)
    assert sorted(pairs) == list(range(n_seeds))
    for pair in pairs.values():
        assert [c.data.params["batch_size"] for c in pair] == ["64", "1000"]
        assert [c.data.params["interpolation_alpha"] for c in pair] == ["0", "1"]
        # same initial weights within a replicate: only the batch size differs
        assert len({c.data.params["seed"] for c in pair}) == 1
    assert len({pair[0].data.params["seed"] for pair in pairs.values()}) == n_seeds
    assert {c.data.params["n_params"] for c in children} == {"109386"}

    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    assert list(curve.columns) == COLUMNS
    metrics = ["train_loss", "test_loss", "train_acc", "test_acc"]
    for index, pair in pairs.items():
        own = curve[curve.replicate == index]
        assert own.alpha.iloc[0] == -1.0 and own.alpha.iloc[-1] == 2.0
        assert np.diff(own.alpha).max() <= 0.05 + 1e-12
        for child in pair:
            row = own[own.alpha == float(child.data.params["interpolation_alpha"])]
            assert len(row) == 1
            assert row[metrics].iloc[0].to_dict() == {key: child.data.metrics[key] for key in metrics}  # exactly
        assert own[own.alpha == 1.5].train_loss.iloc[0] > own.train_loss.min()  # extrapolating costs loss

    # an interior point of the second seed's curve is that seed's logged weights mixed, evaluated on the full splits
    theta1, theta2 = (torch.load(reader.download(c, "weights/final.pt"), weights_only=True) for c in pairs[1])
    mnist = load_mnist()
    splits = {"train": subset(mnist.train_x, mnist.train_y, N_TRAIN, 0),
              "test": subset(mnist.test_x, mnist.test_y, N_TEST, 0)}
    model = mlp(part1_3c_i.MODEL)
    model.load_state_dict(interpolate_state_dict(theta1, theta2, 1.5))
    again = evaluate_splits(model, splits, CLASSIFICATION)
    row = curve[(curve.alpha == 1.5) & (curve.replicate == 1)].iloc[0]
    assert row.test_loss == pytest.approx(again["test_loss"], rel=1e-6) and row.train_acc == again["train_acc"]

    store = tmp_path / "analysis"
    drawn = hw1track("analyze", "part1_3c_i", "--tracking-uri", store_uri, "--out", str(store), cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert [p.name for p in (store / "part1_3c_i").iterdir()] == ["interpolation.png"]
    logged = {a.path for a in reader.client.list_artifacts(parent_id, "figures")}
    assert logged == {"figures/interpolation.png"}
    logged_claims = from_json(reader.download(parent, CLAIMS_ARTIFACT).read_text())
    assert [claim.id for claim in logged_claims] == CLAIM_IDS

    # the figure: per split the seeds' geometric mean loss with a 95 % band, the seeds themselves as thin lines
    figure = analysis.figures(reader, parent)["interpolation"]
    loss_axes, accuracy_axes = figure.axes[:2]
    assert seeds_text(n_seeds) in loss_axes.get_title()
    assert sum(isinstance(c, PolyCollection) for c in loss_axes.collections) == 2
    assert sum(isinstance(c, PolyCollection) for c in accuracy_axes.collections) == 2
    by_seed = curve.pivot(index="alpha", columns="replicate", values="train_loss")
    mean_line = next(line for line in loss_axes.lines if line.get_label().startswith("train cross-entropy"))
    assert f"{n_seeds} seeds" in mean_line.get_label()
    assert list(mean_line.get_xdata()) == list(by_seed.index)
    assert mean_line.get_ydata() == pytest.approx(10 ** np.log10(by_seed).mean(axis=1), rel=1e-9)
    thin = [line for line in loss_axes.lines if line.get_linewidth() < 1 and len(line.get_xdata()) == len(by_seed)]
    assert len(thin) == 2 * n_seeds  # train and test of every seed

    claims = {claim.id: claim for claim in analysis.claims(reader, parent)}
    assert list(claims) == CLAIM_IDS and claims == {claim.id: claim for claim in logged_claims}
    between, beyond = [], []
    for index in range(n_seeds):
        loss = by_seed[index]
        between.append(loss[(loss.index > 0) & (loss.index < 1)].max() - max(loss[0.0], loss[1.0]))
        beyond.append(min(loss[-1.0] - loss[0.0], loss[2.0] - loss[1.0]))
    for claim, expected in ((claims[CLAIM_IDS[0]], between), (claims[CLAIM_IDS[1]], beyond)):
        check_claim(claim, n_seeds)
        assert claim.effect == pytest.approx(np.mean(expected), abs=1e-12)
        sem = stats.sem(expected)
        assert claim.ci_high - claim.effect == pytest.approx(stats.t.ppf(0.975, n_seeds - 1) * sem, rel=1e-9)


@pytest.mark.slow
def test_one_seed_draws_the_plain_curves_and_leaves_the_claims_without_verdict(store_uri, reader):
    parent_id = run_quick("part1_3c_i", store_uri, "epochs=1", "train_size=600", "test_size=200",
                          "alphas_per_unit=5", seeds=1)
    parent = reader.client.get_run(parent_id)
    assert len(reader.children(parent)) == 2
    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    assert list(curve.columns) == COLUMNS and set(curve.replicate) == {0}

    figure = analysis.figures(reader, parent)["interpolation"]
    loss_axes, accuracy_axes = figure.axes[:2]
    assert seeds_text(1) in loss_axes.get_title()
    assert not any(isinstance(c, PolyCollection) for c in loss_axes.collections + accuracy_axes.collections)
    for axes, key, label in ((loss_axes, "train_loss", "train cross-entropy"), (loss_axes, "test_loss",
                             "test cross-entropy"), (accuracy_axes, "test_acc", "test accuracy")):
        (line,) = [line for line in axes.lines if line.get_label() == label]
        assert list(line.get_xdata()) == list(curve.alpha) and list(line.get_ydata()) == list(curve[key])
    assert len([line for line in loss_axes.lines if len(line.get_xdata()) == len(curve)]) == 2  # no seed lines

    claims = analysis.claims(reader, parent)
    assert [claim.id for claim in claims] == CLAIM_IDS
    for claim in claims:
        check_claim(claim, 1)
        assert claim.verdict == INCONCLUSIVE and math.isnan(claim.ci_low) and "one seed" in claim.detail


def _pairs(children) -> dict[int, list]:
    """The two trained models of each replicate, batch 64 first."""
    pairs = {}
    for child in sorted(children, key=lambda c: float(c.data.params["interpolation_alpha"])):
        pairs.setdefault(replicate(child), []).append(child)
    return pairs
