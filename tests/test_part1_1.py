"""part1_1a and part1_1b: equal-size models, what they log, and that a seed fixes every number."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_quick
from matplotlib.collections import PolyCollection
from mlflow.entities import Run

from analysis import part1_1a as analysis_1a
from analysis import part1_1b as analysis_1b
from hw1track.stats.claims import VERDICTS, Claim
from hw1track.tracking.names import TAG_STUCK
from hw1track.tracking.query import StoreReader, by_group, replicate
from hw1track.training.models import cnn, mlp, n_params
from runs import part1_1a, part1_1b


@pytest.mark.parametrize("sizes", [
    [n_params(mlp(widths)) for widths in part1_1a.MODELS.values()],
    [n_params(cnn(channels, dense)) for channels, dense in part1_1b.MODELS.values()],
])
def test_compared_models_have_equal_size(sizes):
    assert (max(sizes) - min(sizes)) / max(sizes) <= 0.02


def test_the_1_1b_cnns_have_1_2_and_3_conv_layers():
    depths = [sum(isinstance(m, torch.nn.Conv2d) for m in cnn(c, d)) for c, d in part1_1b.MODELS.values()]
    assert depths == [1, 2, 3]


def _histories(reader, parent_id, key):
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    frame = reader.history(children, [key])
    return {run.info.run_name: frame[frame.run_id == run.info.run_id].value.tolist() for run in children}


@pytest.fixture(scope="module")
def two_seed_1a(tmp_path_factory) -> tuple[str, str]:
    """One real two-seed part1_1a study, shared by the tests that only read it: (store URI, parent id)."""
    folder = tmp_path_factory.mktemp("part1_1a")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return uri, run_quick("part1_1a", uri, "epochs=40", seeds=2)


def _copy_of(store: tuple[str, str], tmp_path) -> tuple[StoreReader, Run]:
    """A copy of the shared store (its artifacts stay where they are) that a test may retag freely."""
    uri, parent_id = store
    shutil.copy(uri[len("sqlite:///"):], tmp_path / "mlflow.db")
    copy = StoreReader(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return copy, copy.client.get_run(parent_id)


def _collapsed(reader: StoreReader, run: Run) -> bool:
    """Recomputed from the logged grid: a net whose ReLUs all died predicts one constant over the whole grid."""
    grid = pd.read_csv(reader.download(run, "predictions.csv"))
    return grid.y_pred.std() <= part1_1a.COLLAPSED_OUTPUT_STD * grid.y_true.std()


def test_part1_1a_logs_params_curves_predictions_and_weights(two_seed_1a):
    uri, parent_id = two_seed_1a
    reader = StoreReader(uri)
    parent = reader.client.get_run(parent_id)
    tags = parent.data.tags
    assert tags["hw1track.role"] == "parent" and tags["hw1track.preset"] == "quick"
    assert tags["hw1track.git_commit"] and tags["hw1track.version.torch"] == torch.__version__
    assert parent.data.params["epochs"] == "40" and parent.data.params["seed"] == "0"
    assert parent.data.params["seeds"] == "2"
    children = reader.children(parent)
    assert [c.info.run_name for c in children] == [f"{t}/{m}{r}" for t in ("sinc", "sgn") for m in part1_1a.MODELS
                                                   for r in ("", "#1")]
    assert len({c.data.params["seed"] for c in children}) == 12
    groups = by_group(children)
    assert [[replicate(run) for run in runs] for runs in groups.values()] == [[0, 1]] * 6
    assert all(len({run.data.params["model"] for run in runs}) == 1 for runs in groups.values())
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent_id and child.data.tags["hw1track.config_hash"]
        widths = tuple(int(w) for w in child.data.params["widths"].split("-"))
        assert int(child.data.params["n_params"]) == n_params(mlp(widths))
        steps = [m.step for m in reader.client.get_metric_history(child.info.run_id, "train_loss")]
        assert steps == list(range(41))
        state = torch.load(reader.download(child, "weights/final.pt"), weights_only=True)
        model = mlp(widths)
        model.load_state_dict(state)
        grid = pd.read_csv(reader.download(child, "predictions.csv"))
        with torch.no_grad():
            again = model(torch.tensor(grid.x.values, dtype=torch.float32).unsqueeze(1)).squeeze(1)
        assert torch.allclose(again, torch.tensor(grid.y_pred.values, dtype=torch.float32), atol=1e-6)
        final_mse = ((grid.y_pred - grid.y_true) ** 2).mean()
        assert final_mse == pytest.approx(child.data.metrics["train_loss"], rel=1e-4)
    curves = reader.history(children, ["train_loss"]).groupby("run_id").value.apply(list)
    assert curves[children[0].info.run_id] != curves[children[1].info.run_id]  # replicates differ in their seed


def test_part1_1a_counts_the_nets_that_collapsed_to_a_constant(two_seed_1a):
    uri, parent_id = two_seed_1a
    reader = StoreReader(uri)
    children = reader.children(reader.client.get_run(parent_id))
    counted = analysis_1a.fits_by_target(children)
    assert list(counted) == ["sinc", "sgn"]
    for target, nets in counted.items():
        assert [fits.model for fits in nets] == list(part1_1a.MODELS)
        for fits in nets:
            mine = [run for run in children if run.data.params["model"] == f"{target}/{fits.model}"]
            assert fits.total == 2 and {r.info.run_id for r in fits.live + fits.dead} == {r.info.run_id for r in mine}
            assert [r.info.run_id for r in fits.dead] == [r.info.run_id for r in mine if _collapsed(reader, r)]


def _legend(ax):
    """The panel's own legend, or the figure's (drawn below the panel once it carries the live-net summary)."""
    return ax.get_legend() or ax.figure.legends[0]


def _legend_texts(ax) -> list[str]:
    return [text.get_text() for text in _legend(ax).get_texts()]


def _dead_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_linestyle() == "--" and line.get_color() == "0.55"]


def test_part1_1a_figures_and_claims_compare_depths_over_live_nets_only(two_seed_1a, tmp_path):
    reader, parent = _copy_of(two_seed_1a, tmp_path)
    children = {run.info.run_name: run for run in reader.children(parent)}
    # Whatever the short training gave, fix which nets count as dead: on sinc deep loses one of its two seeds and
    # middle both; on sgn every net counts as live.
    dead = {"sinc/deep#1", "sinc/middle", "sinc/middle#1"}
    for name, run in children.items():
        reader.client.set_tag(run.info.run_id, TAG_STUCK, str(name in dead).lower())
    parent = reader.client.get_run(parent.info.run_id)

    figures = analysis_1a.figures(reader, parent)
    assert set(figures) == {f"{kind}_{t}" for kind in ("loss", "predictions") for t in ("sinc", "sgn")}
    for name, figure in figures.items():
        ax = figure.axes[0]
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        title, legend = ax.get_title(), " | ".join(_legend_texts(ax))
        assert "2 seeds" in title, name
        if name.endswith("sinc"):
            assert len(bands) == 1 and len(_dead_lines(ax)) == 3, name  # only shallow has two live nets
            assert "deep 1-5-10-10-10-10-10-5-1, P=571: 1 of 2 seeds dead" in legend
            assert "middle 1-10-18-15-4-1, P=572: 2 of 2 seeds dead" in legend
            assert "live nets (the rest died): deep 1/2, middle 0/2, shallow 2/2" in title
        else:
            assert len(bands) == 3 and not _dead_lines(ax) and "dead" not in legend + title, name
            assert "mean of 2 seeds, 95% CI" in legend
    summary = _legend(figures["loss_sinc"].axes[0]).get_title().get_text()
    assert "deep     1 of 2 live" in summary and "middle   0 of 2 live   none live" in summary

    claims = {claim.id: claim for claim in analysis_1a.claims(reader, parent)}
    assert set(claims) == {"part1_1a.sinc_deep_beats_shallow", "part1_1a.sgn_deep_beats_shallow"}
    for claim in claims.values():
        assert claim.statement and claim.effect_name and claim.method and claim.verdict in VERDICTS
        assert set(Claim.from_dict(json.loads(json.dumps(claim.as_dict()))).as_dict()) == set(claim.as_dict())
    sinc = claims["part1_1a.sinc_deep_beats_shallow"]
    assert sinc.n_seeds == 1 and sinc.verdict == "inconclusive" and math.isnan(sinc.ci_low)
    assert "deep 1 of 2, shallow 2 of 2" in sinc.detail
    live_mse = {name: math.log10(run.data.metrics["train_loss"]) for name, run in children.items()}
    assert sinc.effect == pytest.approx((live_mse["sinc/shallow"] + live_mse["sinc/shallow#1"]) / 2
                                        - live_mse["sinc/deep"])
    sgn = claims["part1_1a.sgn_deep_beats_shallow"]
    assert sgn.n_seeds == 2 and "deep 2 of 2, shallow 2 of 2" in sgn.detail
    assert sgn.ci_low <= sgn.effect <= sgn.ci_high
    assert sgn.effect == pytest.approx((live_mse["sgn/shallow"] + live_mse["sgn/shallow#1"]) / 2
                                       - (live_mse["sgn/deep"] + live_mse["sgn/deep#1"]) / 2)


def test_part1_1a_figures_of_one_seed_are_plain_curves(store_uri, reader):
    parent = reader.client.get_run(run_quick("part1_1a", store_uri, "epochs=5", "targets=sinc", seeds=1))
    figures = analysis_1a.figures(reader, parent)
    assert set(figures) == {"loss_sinc", "predictions_sinc"}
    for figure in figures.values():
        ax = figure.axes[0]
        assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert "1 seed (no spread)" in ax.get_title()
        assert not any("mean of" in text for text in _legend_texts(ax))
    nets = analysis_1a.fits_by_target(reader.children(parent))["sinc"]
    n_dead = sum(len(fits.dead) for fits in nets)
    # a live net is one solid curve, a dead one a grey dashed curve
    loss = figures["loss_sinc"].axes[0]
    assert len(_dead_lines(loss)) == n_dead and len(loss.get_lines()) == 3


def test_same_seed_same_numbers_other_seed_other_numbers(store_uri, reader):
    def curves(*overrides):
        return _histories(reader, run_quick("part1_1a", store_uri, "epochs=30", "targets=sinc", *overrides, seeds=1),
                          "train_loss")

    first, again, other = curves(), curves(), curves("seed=5")
    assert first == again
    assert first["sinc/deep"] != other["sinc/deep"]


@pytest.mark.slow
def test_part1_1b_logs_full_set_metrics_per_epoch_and_draws_bands_and_a_claim(store_uri, reader, data_root):
    parent_id = run_quick("part1_1b", store_uri, "epochs=2", "train_size=2000", "test_size=1000", seeds=2)
    parent = reader.client.get_run(parent_id)
    assert parent.data.tags["hw1track.mnist_md5"]
    children = reader.children(parent)
    assert [c.info.run_name for c in children] == list(part1_1b.MODELS) + [f"{m}#1" for m in part1_1b.MODELS]
    assert len({c.data.params["seed"] for c in children}) == 6
    for child in children:
        for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
            assert [m.step for m in reader.client.get_metric_history(child.info.run_id, key)] == [0, 1, 2]
        assert 0.3 < child.data.metrics["test_acc"] <= 1.0  # learnt something in two epochs on 2,000 images
        # accuracy is a fraction of the whole evaluation set, not a minibatch estimate
        assert (child.data.metrics["test_acc"] * 1000) == pytest.approx(round(child.data.metrics["test_acc"] * 1000))
        assert child.data.params["n_train"] == "2000"

    figures = analysis_1b.figures(reader, parent)
    assert set(figures) == {"loss", "accuracy"}
    for figure in figures.values():
        # one band per CNN on each split's panel, each over both seeds
        assert "2 seeds" in figure.get_suptitle() and len(figure.axes) == 2
        for ax in figure.axes:
            assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 3
            assert sum("mean of 2 seeds, 95% CI" in text for text in _legend_texts(ax)) == 3
            # the panels share their y-axis, and no panel's mean curve runs off it (bands may)
            low, high = ax.get_ylim()
            drawn = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()])
            assert low <= drawn.min() and drawn.max() <= high

    (claim,) = analysis_1b.claims(reader, parent)
    assert claim.id == "part1_1b.deepest_beats_shallowest" and claim.verdict in VERDICTS
    assert "cnn3" in claim.statement and "cnn1" in claim.statement and claim.n_seeds == 2
    accuracy = {c.info.run_name: c.data.metrics["test_acc"] for c in children}
    assert claim.effect == pytest.approx((accuracy["cnn3"] + accuracy["cnn3#1"]) / 2
                                         - (accuracy["cnn1"] + accuracy["cnn1#1"]) / 2)
    assert claim.ci_low <= claim.effect <= claim.ci_high


@pytest.mark.slow
def test_part1_1b_figures_of_one_seed_are_plain_curves(store_uri, reader, data_root):
    parent = reader.client.get_run(run_quick("part1_1b", store_uri, "epochs=1", "train_size=500", "test_size=200",
                                             seeds=1))
    for figure in analysis_1b.figures(reader, parent).values():
        (ax,) = figure.axes
        assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(ax.get_lines()) == 6 and "1 seed (no spread)" in ax.get_title()
    (claim,) = analysis_1b.claims(reader, parent)
    assert claim.verdict == "inconclusive" and claim.n_seeds == 1 and "one seed" in claim.detail
