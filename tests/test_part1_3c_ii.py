"""part1_3c_ii: five batch sizes, each child logging updates, sensitivity and sharpness under the agreed names."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import check_claim, check_figures_name_the_image_set, hw1track, run_quick
from scipy import stats

from analysis import part1_3c_ii as analysis
from hw1track.measures.hessian_spectrum import HessianOperator, top_eigenvalue
from hw1track.measures.sensitivity import DEFINITION, sensitivity
from hw1track.measures.sharpness import model_loss
from hw1track.reporting.plotting import seeds_text
from hw1track.stats.claims import INCONCLUSIVE, from_json
from hw1track.tracking.names import CLAIMS_ARTIFACT, HESSIAN_DENSITY_ARTIFACT
from hw1track.tracking.query import replicate
from hw1track.training.data import load_mnist, subset
from hw1track.training.models import mlp
from runs import part1_3c_ii

CLAIM_IDS = ["part1_3c_ii.sharpness_grows_with_batch_size", "part1_3c_ii.lambda_max_grows_with_batch_size",
             "part1_3c_ii.sensitivity_falls_with_batch_size",
             "part1_3c_ii.sharpness_grows_with_batch_size_at_equal_updates",
             "part1_3c_ii.lambda_max_grows_with_batch_size_at_equal_updates"]


def test_presets_sweep_the_homeworks_batch_sizes_under_the_agreed_metric_names():
    assert [part1_3c_ii.sharpness_metric(e) for e in (1e-3, 5e-4)] == ["sharpness_eps1e-3", "sharpness_eps5e-4"]
    for preset in part1_3c_ii.PRESETS.values():
        assert preset.batch_sizes == (10, 385, 760, 1135, 1510)
        assert [part1_3c_ii.sharpness_metric(e) for e in preset.sharpness_epsilons] == [
            "sharpness_eps1e-3", "sharpness_eps5e-4"]


@pytest.mark.slow
def test_quick_run_logs_updates_sensitivity_and_sharpness_and_analysis_draws_them(store_uri, reader, tmp_path):
    n_train, n_test, n_sharp, n_seeds = 1600, 300, 200, 2  # n_train above the largest batch, 1510
    parent_id = run_quick("part1_3c_ii", store_uri, "epochs=1", f"train_size={n_train}", f"test_size={n_test}",
                          f"sharpness_examples={n_sharp}", "sharpness_maxiter=3", "equal_updates_arm=true",
                          seeds=n_seeds)
    parent = reader.client.get_run(parent_id)
    every_child = reader.children(parent)
    children = _arm(every_child, part1_3c_ii.EQUAL_EPOCHS)
    per_seed = _per_seed(children)
    assert len(per_seed) == n_seeds and len(children) == 5 * n_seeds and len(every_child) == 10 * n_seeds
    # the second arm: every batch size about as many updates as batch 10 makes in one epoch (160), same start
    for runs in _per_seed(_arm(every_child, part1_3c_ii.EQUAL_UPDATES)):
        epochs = [int(c.data.params["epochs"]) for c in runs]
        updates = [c.data.metrics["n_updates"] for c in runs]
        assert epochs == [1, 32, 53, 80, 80] and updates == [160, 160, 159, 160, 160]
        for child in runs:  # evaluated at the first epoch past each tenth of the 160 updates, not after every epoch
            steps = [m.step for m in reader.client.get_metric_history(child.info.run_id, "train_loss")]
            assert ",".join(map(str, steps)) == child.data.params["evaluated_epochs"]
            assert steps[0] == 0 and steps[-1] == int(child.data.params["epochs"]) and len(steps) <= 11
        assert child.data.params["evaluated_epochs"] == "0,8,16,24,32,40,48,56,64,72,80"
        assert {c.data.params["seed"] for c in runs} == {per_seed[replicate(runs[0])][0].data.params["seed"]}
    for runs in per_seed:
        assert [int(c.data.params["batch_size"]) for c in runs] == [10, 385, 760, 1135, 1510]
        assert len({c.data.params["seed"] for c in runs}) == 1  # every batch size of a seed starts alike
    assert len({runs[0].data.params["seed"] for runs in per_seed}) == n_seeds

    mnist = load_mnist()
    test_x = subset(mnist.test_x, mnist.test_y, n_test, 0)[0]
    train = subset(mnist.train_x, mnist.train_y, n_train, 0)
    sharpness_set = subset(*train, n_sharp, 0)
    for child in children:
        params, metrics = child.data.params, child.data.metrics
        assert params["sensitivity_definition"] == DEFINITION and params["sharpness_maxiter"] == "3"
        assert params["sharpness_examples"] == str(n_sharp)
        assert {"train_loss", "test_loss", "train_acc", "test_acc", "sensitivity", "sharpness_eps1e-3",
                "sharpness_eps5e-4", "n_updates", "lambda_max", "lambda_max_residual", "hessian_trace",
                "hessian_trace_stderr"} <= set(metrics)
        assert metrics["n_updates"] == math.ceil(n_train / int(params["batch_size"]))
        assert metrics["sharpness_eps1e-3"] > 0 and metrics["sharpness_eps5e-4"] > 0

        # the measurements belong to the logged final weights
        model = mlp(part1_3c_ii.MODEL)
        model.load_state_dict(torch.load(reader.download(child, "weights/final.pt"), weights_only=True))
        assert metrics["sensitivity"] == pytest.approx(sensitivity(model, test_x), rel=1e-6)
        theta, loss = model_loss(model, *sharpness_set)
        assert metrics["sharpness_base_loss"] == pytest.approx(loss(theta)[0], rel=1e-9)
        # λ_max and the trace of the same loss's Hessian: a longer Lanczos run from other probes agrees
        operator = HessianOperator.of_model(model, F.cross_entropy, *sharpness_set)
        longer = top_eigenvalue(operator, steps=60, generator=torch.Generator().manual_seed(7))
        assert metrics["lambda_max"] == pytest.approx(longer.value, rel=1e-3)
        assert metrics["lambda_max_residual"] < 1e-2 * metrics["lambda_max"]
        assert 0 < metrics["hessian_trace_stderr"] < 0.2 * metrics["hessian_trace"]
        # the smallest and largest batch sizes also log the SLQ density, whose top node is λ_max
        logged = reader.artifacts(child)
        if int(params["batch_size"]) in (10, 1510):
            density = pd.read_csv(reader.download(child, HESSIAN_DENSITY_ARTIFACT))
            assert list(density.columns) == ["probe", "eigenvalue", "weight"] and density.probe.nunique() == 4
            assert density.groupby("probe").weight.sum().to_numpy() == pytest.approx(np.ones(4), abs=1e-9)
            assert density.eigenvalue.max() == pytest.approx(longer.value, rel=1e-3)
        else:
            assert HESSIAN_DENSITY_ARTIFACT not in logged
    updates = [c.data.metrics["n_updates"] for c in per_seed[0]]
    assert updates == sorted(updates, reverse=True) and updates[0] == 160

    out = tmp_path / "analysis"
    drawn = hw1track("analyze", "part1_3c_ii", "--tracking-uri", store_uri, "--out", str(out), cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    drawn_names = ["batch_size.png", "curvature.png", "equal_updates.png", "hessian_density.png"]
    assert sorted(p.name for p in (out / "part1_3c_ii").iterdir()) == drawn_names
    assert {a.path for a in reader.client.list_artifacts(parent_id, "figures")} == {
        f"figures/{name}" for name in drawn_names}
    figures = analysis.figures(reader, parent)
    check_figures_name_the_image_set(figures)
    (density_axes,) = figures["hessian_density"].axes
    assert len(density_axes.lines) == 2 * n_seeds  # smallest and largest batch, one line per seed
    assert [text.get_text() for text in density_axes.get_legend().get_texts()] == [
        f"batch {b} ({seeds_text(n_seeds)}, one line each)" for b in (10, 1510)]
    logged_claims = from_json(reader.download(parent, CLAIMS_ARTIFACT).read_text())
    assert [claim.id for claim in logged_claims] == CLAIM_IDS

    # every measure is one point per batch size: the seeds' mean with its 95 % t interval as an error bar
    figure = analysis.figures(reader, parent)["batch_size"]
    assert seeds_text(n_seeds) in figure.get_suptitle()
    left, right, sensitivity_axes, sharpness_axes = figure.axes
    assert len(left.containers) == len(right.containers) == 4 and len(sharpness_axes.containers) == 2
    (bars,) = sensitivity_axes.containers
    assert f"{n_seeds} seeds" in bars.get_label()
    values = np.array([[runs[i].data.metrics["sensitivity"] for runs in per_seed] for i in range(5)])
    low, high = stats.t.interval(0.95, n_seeds - 1, loc=values.mean(axis=1), scale=stats.sem(values, axis=1))
    assert list(bars.lines[0].get_xdata()) == [10, 385, 760, 1135, 1510]
    assert bars.lines[0].get_ydata() == pytest.approx(values.mean(axis=1), rel=1e-12)
    segments = bars.lines[2][0].get_segments()
    assert [s[0][1] for s in segments] == pytest.approx(np.maximum(low, 0), rel=1e-9)  # a sensitivity is >= 0
    assert [s[1][1] for s in segments] == pytest.approx(high, rel=1e-9)

    # the claims fit each measure's trend against log10 of the batch size within a seed, then average over seeds
    claims = {claim.id: claim for claim in analysis.claims(reader, parent)}
    assert list(claims) == CLAIM_IDS and claims == {claim.id: claim for claim in logged_claims}
    for claim_id, key in zip(CLAIM_IDS[:3], ("sharpness_eps1e-3", "lambda_max", "sensitivity")):
        slopes = [stats.linregress(np.log10([int(r.data.params["batch_size"]) for r in runs]),
                                   [r.data.metrics[key] for r in runs]).slope for runs in per_seed]
        claim = claims[claim_id]
        check_claim(claim, n_seeds, direction=-1 if claim_id.endswith("falls_with_batch_size") else +1)
        assert claim.effect == pytest.approx(np.mean(slopes), rel=1e-9)


@pytest.mark.slow
def test_one_seed_draws_plain_lines_and_leaves_the_claims_without_verdict(store_uri, reader):
    parent_id = run_quick("part1_3c_ii", store_uri, "epochs=1", "train_size=400", "test_size=100",
                          "batch_sizes=20,100,400", "sharpness_examples=100", "sharpness_maxiter=2", seeds=1)
    parent = reader.client.get_run(parent_id)
    children = sorted(_arm(reader.children(parent), part1_3c_ii.EQUAL_EPOCHS),
                      key=lambda c: int(c.data.params["batch_size"]))
    assert [int(c.data.params["batch_size"]) for c in children] == [20, 100, 400]

    figure = analysis.figures(reader, parent)["batch_size"]
    assert seeds_text(1) in figure.get_suptitle()
    left, right, sensitivity_axes, sharpness_axes = figure.axes
    assert not any(axes.containers for axes in figure.axes)  # no error bars: one seed has no spread
    for axes, label, key in ((left, "test accuracy", "test_acc"), (right, "train cross-entropy", "train_loss"),
                             (sensitivity_axes, "sensitivity (test)", "sensitivity"),
                             (sharpness_axes, "sharpness, ε = 1e-3", "sharpness_eps1e-3")):
        (line,) = [line for line in axes.lines if line.get_label() == label]
        assert list(line.get_xdata()) == [20, 100, 400]
        assert list(line.get_ydata()) == [child.data.metrics[key] for child in children]

    claims = analysis.claims(reader, parent)
    assert [claim.id for claim in claims] == CLAIM_IDS[:3]  # the quick preset has no equal-updates arm
    for claim, direction in zip(claims, (+1, +1, -1), strict=True):
        check_claim(claim, 1, direction)
        assert claim.verdict == INCONCLUSIVE and math.isnan(claim.ci_low) and "one seed" in claim.detail


def _arm(children, arm: str) -> list:
    return [child for child in children if child.data.params["arm"] == arm]


def _per_seed(children) -> list[list]:
    """The models of each replicate, smallest batch first."""
    return [sorted((c for c in children if replicate(c) == index), key=lambda c: int(c.data.params["batch_size"]))
            for index in sorted({replicate(c) for c in children})]
