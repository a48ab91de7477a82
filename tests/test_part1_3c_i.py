"""part1_3c_i: two pairs of solutions per seed, curves that pass exactly through them, and a loss surface around each
batch size's solution."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import check_claim, check_figures_name_the_image_set, hw1track, run_quick
from matplotlib.collections import PolyCollection
from matplotlib.contour import ContourSet
from scipy import stats

from analysis import part1_3c_i as analysis
from hw1track.measures.interpolation import interpolate_state_dict
from hw1track.measures.loss_surface import plane_coordinates
from hw1track.reporting.plotting import seeds_text
from hw1track.stats.claims import INCONCLUSIVE, from_json
from hw1track.tracking.names import CLAIMS_ARTIFACT, INDEPENDENT_INIT, LOSS_SURFACE_ARTIFACT, SHARED_INIT
from hw1track.tracking.query import replicate
from hw1track.training.data import load_mnist, subset
from hw1track.training.evaluation import evaluate_splits
from hw1track.training.models import mlp, seeded_model
from hw1track.training.tasks import CLASSIFICATION
from runs import part1_3c_i

N_TRAIN, N_TEST = 1500, 400
# the documented columns of interpolation.csv, then the replicate and the pair each curve belongs to
COLUMNS = ["alpha", "train_loss", "test_loss", "train_acc", "test_acc", "replicate", "pair"]
SURFACE_COLUMNS = ["solution", "batch_size", "replicate", "pair", "examples", "x", "y", "train_loss", "train_acc"]
CLAIM_IDS = ["part1_3c_i.loss_rises_between", "part1_3c_i.loss_rises_beyond",
             "part1_3c_i.barrier_between_independent_inits", "part1_3c_i.independent_barrier_exceeds_shared"]
THETA_1, THETA_2, THETA_2_OWN = "bs64", "bs1000", "bs1000-independent-init"
CURVE_ENDS = {SHARED_INIT: (THETA_1, THETA_2), INDEPENDENT_INIT: (THETA_1, THETA_2_OWN)}
METRICS = ["train_loss", "test_loss", "train_acc", "test_acc"]
PARAM_MODEL = "model"  # the child param naming its model whatever its replicate (README: names users rely on)


@pytest.mark.slow
def test_quick_run_logs_both_pairs_through_their_models_and_a_surface_around_each_solution(store_uri, reader,
                                                                                           tmp_path):
    n_seeds = 2
    parent_id = run_quick("part1_3c_i", store_uri, "epochs=1", f"train_size={N_TRAIN}", f"test_size={N_TEST}",
                          seeds=n_seeds)
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    models = _models(children)
    assert sorted(models) == list(range(n_seeds))
    for own in models.values():
        described = {name: tuple(run.data.params[key] for key in ("batch_size", "interpolation_alpha", "pair"))
                     for name, run in own.items()}
        assert described == {THETA_1: ("64", "0", SHARED_INIT), THETA_2: ("1000", "1", SHARED_INIT),
                             THETA_2_OWN: ("1000", "1", INDEPENDENT_INIT)}
        # the shared pair shares its seed: only the batch size differs; θ₂′ has one of its own
        assert own[THETA_1].data.params["seed"] == own[THETA_2].data.params["seed"]
    seeds = [int(run.data.params["seed"]) for run in children if run.data.params[PARAM_MODEL] != THETA_2]
    assert len(set(seeds)) == len(seeds) == 2 * n_seeds  # θ₂′'s seed is no other model's
    assert {c.data.params["n_params"] for c in children} == {"109386"}

    splits = _splits()
    _check_initial_weights(reader, models, splits)

    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    assert list(curve.columns) == COLUMNS
    assert sorted(curve.groupby(["replicate", "pair"]).groups) == [(r, p) for r in range(n_seeds)
                                                                   for p in (INDEPENDENT_INIT, SHARED_INIT)]
    for index, own in models.items():
        for pair, ends in CURVE_ENDS.items():
            rows = curve[(curve.replicate == index) & (curve.pair == pair)]
            assert rows.alpha.iloc[0] == -1.0 and rows.alpha.iloc[-1] == 2.0
            assert np.diff(rows.alpha).max() <= 0.1 + 1e-12  # the homework's largest step
            for name, alpha in zip(ends, (0.0, 1.0)):
                row = rows[rows.alpha == alpha]
                assert len(row) == 1
                logged = {key: own[name].data.metrics[key] for key in METRICS}
                assert row[METRICS].iloc[0].to_dict() == logged  # exactly
            assert rows[rows.alpha == 1.5].train_loss.iloc[0] > rows.train_loss.min()  # extrapolating costs loss

    # an interior point of the second seed's independent curve is its logged weights mixed, on the full splits
    theta1, theta2 = (torch.load(reader.download(models[1][name], "weights/final.pt"), weights_only=True)
                      for name in CURVE_ENDS[INDEPENDENT_INIT])
    model = mlp(part1_3c_i.MODEL)
    model.load_state_dict(interpolate_state_dict(theta1, theta2, 0.5))
    again = evaluate_splits(model, splits, CLASSIFICATION)
    row = curve[(curve.alpha == 0.5) & (curve.replicate == 1) & (curve.pair == INDEPENDENT_INIT)].iloc[0]
    assert row.test_loss == pytest.approx(again["test_loss"], rel=1e-6) and row.train_acc == again["train_acc"]

    surface = pd.read_csv(reader.download(parent, LOSS_SURFACE_ARTIFACT))
    _check_surface(reader, surface, models[0], splits["train"])

    store = tmp_path / "analysis"
    drawn = hw1track("analyze", "part1_3c_i", "--tracking-uri", store_uri, "--out", str(store), cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert sorted(p.name for p in (store / "part1_3c_i").iterdir()) == ["interpolation.png", "loss_surface.png"]
    assert {a.path for a in reader.client.list_artifacts(parent_id, "figures")} == {
        "figures/interpolation.png", "figures/loss_surface.png"}
    logged_claims = from_json(reader.download(parent, CLAIMS_ARTIFACT).read_text())
    assert [claim.id for claim in logged_claims] == CLAIM_IDS

    drawn = analysis.figures(reader, parent)
    check_figures_name_the_image_set(drawn)
    _check_interpolation_figure(drawn["interpolation"], curve, n_seeds)
    _check_surface_figure(drawn["loss_surface"], surface)

    claims = {claim.id: claim for claim in analysis.claims(reader, parent)}
    assert list(claims) == CLAIM_IDS and claims == {claim.id: claim for claim in logged_claims}
    expected = _expected_effects(curve, n_seeds)
    for claim_id, values in expected.items():
        claim = claims[claim_id]
        check_claim(claim, n_seeds)
        assert claim.effect == pytest.approx(np.mean(values), abs=1e-12)
        sem = stats.sem(values)
        assert claim.ci_high - claim.effect == pytest.approx(stats.t.ppf(0.975, n_seeds - 1) * sem, rel=1e-9)


@pytest.mark.slow
def test_one_seed_draws_the_plain_curves_of_both_pairs_and_leaves_the_claims_without_verdict(store_uri, reader):
    parent_id = run_quick("part1_3c_i", store_uri, "epochs=1", "train_size=600", "test_size=200",
                          "alphas_per_unit=5", "surface_steps=3", "surface_examples=50", seeds=1)
    parent = reader.client.get_run(parent_id)
    assert sorted(run.info.run_name for run in reader.children(parent)) == [THETA_2, THETA_2_OWN, THETA_1]
    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    assert list(curve.columns) == COLUMNS and set(curve.replicate) == {0}
    surface = pd.read_csv(reader.download(parent, LOSS_SURFACE_ARTIFACT))
    assert surface.groupby("solution").size().to_dict() == {THETA_2: 49, THETA_1: 49}  # 7 × 7
    assert set(surface.examples) == {50} and set(surface.batch_size) == {64, 600}  # batch 1000 capped at 600 images

    figure = analysis.figures(reader, parent)["interpolation"]
    assert seeds_text(1) in figure.get_suptitle()
    for pair in CURVE_ENDS:
        loss_axes, accuracy_axes = _panel(figure, pair)
        own = curve[curve.pair == pair]
        assert not any(isinstance(c, PolyCollection) for c in loss_axes.collections + accuracy_axes.collections)
        for axes, key, label in ((loss_axes, "train_loss", "train cross-entropy"), (loss_axes, "test_loss",
                                 "test cross-entropy"), (accuracy_axes, "test_acc", "test accuracy")):
            (line,) = [line for line in axes.lines if line.get_label() == label]
            assert list(line.get_xdata()) == list(own.alpha) and list(line.get_ydata()) == list(own[key])
        assert len([line for line in loss_axes.lines if len(line.get_xdata()) == len(own)]) == 2  # no seed lines

    claims = analysis.claims(reader, parent)
    assert [claim.id for claim in claims] == CLAIM_IDS
    for claim in claims:
        check_claim(claim, 1)
        assert claim.verdict == INCONCLUSIVE and math.isnan(claim.ci_low) and "one seed" in claim.detail


def _models(children) -> dict[int, dict[str, object]]:
    """The trained models of each replicate by model name: θ₁ (bs64), θ₂ (bs1000) and θ₂′."""
    models: dict[int, dict[str, object]] = {}
    for child in children:
        models.setdefault(replicate(child), {})[child.data.params[PARAM_MODEL]] = child
    return models


def _splits() -> dict:
    mnist = load_mnist()
    return {"train": subset(mnist.train_x, mnist.train_y, N_TRAIN, 0),
            "test": subset(mnist.test_x, mnist.test_y, N_TEST, 0)}


def _check_initial_weights(reader, models, splits) -> None:
    """Each model started from its logged seed's weights: identical in the shared pair, different for θ₂′."""
    for own in models.values():
        initial = {name: seeded_model(lambda: mlp(part1_3c_i.MODEL), int(run.data.params["seed"]))
                   for name, run in own.items()}
        for name, run in own.items():  # the step-0 metrics are the logged seed's weights, before any update
            at_start = evaluate_splits(initial[name], splits, CLASSIFICATION)
            logged = reader.client.get_metric_history(run.info.run_id, "train_loss")
            assert logged[0].step == 0 and logged[0].value == pytest.approx(at_start["train_loss"], rel=1e-6)
        state = {name: model.state_dict() for name, model in initial.items()}
        assert all(torch.equal(state[THETA_1][key], state[THETA_2][key]) for key in state[THETA_1])
        assert not any(torch.equal(state[THETA_1][key], state[THETA_2_OWN][key]) for key in state[THETA_1])


def _check_surface(reader, surface: pd.DataFrame, models: dict, train) -> None:
    """21 × 21 points around θ₁ and θ₂ of replicate 0, whose centres are the trained models on the fixed subset."""
    assert list(surface.columns) == SURFACE_COLUMNS
    assert surface.groupby("solution").size().to_dict() == {THETA_2: 441, THETA_1: 441}
    assert set(surface.replicate) == {0} and set(surface.pair) == {SHARED_INIT} and set(surface.examples) == {300}
    coordinates = plane_coordinates(1.0, 10)
    examples = subset(*train, 300, 0)  # the quick preset's subset, drawn from the invocation's seed
    model = mlp(part1_3c_i.MODEL)
    for name, batch_size in ((THETA_1, 64), (THETA_2, 1000)):
        rows = surface[surface.solution == name]
        assert set(rows.batch_size) == {batch_size}
        assert sorted(set(rows.x)) == coordinates and sorted(set(rows.y)) == coordinates
        assert len(rows[["x", "y"]].drop_duplicates()) == len(rows)
        model.load_state_dict(torch.load(reader.download(models[name], "weights/final.pt"), weights_only=True))
        own = evaluate_splits(model, {"train": examples}, CLASSIFICATION)
        centre = rows[(rows.x == 0) & (rows.y == 0)].iloc[0]
        assert centre.train_loss == pytest.approx(own["train_loss"], rel=1e-6) and centre.train_acc == own["train_acc"]
        assert rows.train_loss.max() > centre.train_loss  # a step of a whole weight norm costs loss somewhere


def _panel(figure, pair: str):
    """The loss axes and the accuracy axes of one pair's panel."""
    (loss_axes,) = [ax for ax in figure.axes if ax.get_label() == f"{pair} loss"]
    (accuracy_axes,) = [ax for ax in figure.axes if ax.get_label() == f"{pair} accuracy"]
    return loss_axes, accuracy_axes


def _check_interpolation_figure(figure, curve: pd.DataFrame, n_seeds: int) -> None:
    """Per pair and split the seeds' geometric mean loss with a 95 % band, the seeds themselves as thin lines."""
    assert seeds_text(n_seeds) in figure.get_suptitle()
    for pair, title in (("shared", "shared initialisation"), ("independent", "independent initialisations")):
        loss_axes, accuracy_axes = _panel(figure, f"{pair}_init")
        assert loss_axes.get_title().startswith(title) and loss_axes.get_yscale() == "log"
        assert sum(isinstance(c, PolyCollection) for c in loss_axes.collections) == 2
        assert sum(isinstance(c, PolyCollection) for c in accuracy_axes.collections) == 2
        by_seed = curve[curve.pair == f"{pair}_init"].pivot(index="alpha", columns="replicate", values="train_loss")
        mean_line = next(line for line in loss_axes.lines if line.get_label().startswith("train cross-entropy"))
        assert f"{n_seeds} seeds" in mean_line.get_label()
        assert list(mean_line.get_xdata()) == list(by_seed.index)
        assert mean_line.get_ydata() == pytest.approx(10 ** np.log10(by_seed).mean(axis=1), rel=1e-9)
        thin = [line for line in loss_axes.lines if line.get_linewidth() < 1 and len(line.get_xdata()) == len(by_seed)]
        assert len(thin) == 2 * n_seeds  # train and test of every seed
    legend = figure.legends[0]
    assert {text.get_text().split(" (")[0] for text in legend.get_texts()} == {
        "train cross-entropy", "test cross-entropy", "train accuracy", "test accuracy"}


def _check_surface_figure(figure, surface: pd.DataFrame) -> None:
    """Side by side, one colour scale: the same levels and norm in both panels, one colour bar with its units."""
    panels = [ax for ax in figure.axes if any(isinstance(c, ContourSet) and c.filled for c in ax.collections)]
    assert len(panels) == 2
    filled = [next(c for c in ax.collections if isinstance(c, ContourSet) and c.filled) for ax in panels]
    assert np.array_equal(filled[0].levels, filled[1].levels) and len(filled[0].levels) >= 10
    assert (filled[0].norm.vmin, filled[0].norm.vmax) == (filled[1].norm.vmin, filled[1].norm.vmax)
    assert filled[0].levels[0] == pytest.approx(surface.train_loss.min()) and \
        filled[0].levels[-1] == pytest.approx(surface.train_loss.max())
    for ax, batch_size in zip(panels, (64, 1000)):
        assert ax.get_title().startswith(f"batch {batch_size} ") and "21×21 grid, 300 training examples" in \
            ax.get_title()
        assert "filter-normalised" in ax.get_xlabel() and "filter-normalised" in ax.get_ylabel()
    (bar,) = [ax for ax in figure.axes if "training loss (cross-entropy" in ax.get_ylabel()]
    assert bar not in panels
    assert "filter-normalised" in figure.get_suptitle() and seeds_text(1) in figure.get_suptitle()


def _expected_effects(curve: pd.DataFrame, n_seeds: int) -> dict[str, list[float]]:
    """The claims' per-seed values, computed here from the table."""
    by_pair = {pair: curve[curve.pair == pair].pivot(index="alpha", columns="replicate", values="train_loss")
               for pair in CURVE_ENDS}
    rise = {pair: [] for pair in CURVE_ENDS}
    beyond = []
    for index in range(n_seeds):
        for pair, table in by_pair.items():
            loss = table[index]
            rise[pair].append(loss[(loss.index > 0) & (loss.index < 1)].max() - max(loss[0.0], loss[1.0]))
        loss = by_pair[SHARED_INIT][index]
        beyond.append(min(loss[-1.0] - loss[0.0], loss[2.0] - loss[1.0]))
    return {CLAIM_IDS[0]: rise[SHARED_INIT], CLAIM_IDS[1]: beyond, CLAIM_IDS[2]: rise[INDEPENDENT_INIT],
            CLAIM_IDS[3]: list(np.subtract(rise[INDEPENDENT_INIT], rise[SHARED_INIT]))}
