"""part1_2c: stacked training equals one-at-a-time training, phase 2 drives ‖∇L‖ down, a run logs what SPEC.md
names, and the figures and claim count collapsed nets per replicate and leave them out of the correlation."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import run_quick
from naive_reference import minimise_one_at_a_time
from scipy.stats import spearmanr

from analysis import part1_2c as analysis
from hw1track.measures import curvature
from hw1track.reporting.plotting import save_figures
from hw1track.stats.claims import VERDICTS, verdict
from hw1track.tracking.query import StoreReader
from hw1track.training.full_batch import minimise, squared_grad_norm_objective
from hw1track.training.models import mlp, n_params, seeded_model
from hw1track.training.stacks import DenseReluStack, ModelStack
from hw1track.training.targets import sample_target
from runs.part1_2c import DTYPE, PHASE2, PRESETS, WIDTHS

SPEC_METRICS = {"final_loss", "final_grad_norm", "minimal_ratio", "minimal_ratio_tol", "lambda_min", "lambda_max",
                "n_near_zero_eigenvalues", "grad_null_fraction", "hessian_grad_ratio", "reached_grad_norm_threshold"}


def _sinc(n_points=60):
    return tuple(t.to(DTYPE) for t in sample_target("sinc", n_points))


def _models(seeds):
    return [seeded_model(lambda: mlp(WIDTHS), seed).to(DTYPE) for seed in seeds]


def test_presets_have_the_studys_size():
    assert PRESETS["full"].n_trainings == 100 and PRESETS["quick"].n_trainings >= 20
    # the homework's phase 2 everywhere; the second-order one where the study can afford it
    assert PRESETS["full"].phase2_methods == ("adam", "levenberg_marquardt")
    assert PRESETS["quick"].phase2_methods[0] == "adam"
    assert 100 <= n_params(mlp(WIDTHS)) < 1000


# The generic stack (vmapped forward, autograd backward) and the hand-written one must agree with each other
# and with plain autograd on one model.
STACKS = [ModelStack, DenseReluStack]


@pytest.mark.parametrize("stack_class", STACKS)
def test_phase2_objective_is_the_gradient_of_the_squared_gradient_norm(stack_class):
    """Its gradient is 2·H·∇L (through the gradient), not ∇L: a phase 2 that still minimised the MSE fails here."""
    x, y = _sinc()
    stack = stack_class(_models([0, 1]))
    losses, objective_gradient, norms = squared_grad_norm_objective(stack, x, y)

    mse = curvature.loss_of_flat_params(stack.template, F.mse_loss, x, y)
    thetas = stack.flat()
    hessians = curvature.full_hessian(mse, thetas)
    for i in range(2):
        theta = thetas[i].clone().requires_grad_()
        (gradient,) = torch.autograd.grad(mse(theta), theta)
        torch.testing.assert_close(objective_gradient[i], 2 * hessians[i] @ gradient, rtol=1e-9, atol=1e-12)
        assert norms[i].item() == pytest.approx(gradient.norm().item(), rel=1e-10)
        assert losses[i].item() == pytest.approx(mse(theta).item(), rel=1e-12)


def test_the_hand_written_stack_is_only_for_dense_relu_nets():
    with pytest.raises(ValueError, match="mlp"):
        DenseReluStack([torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1, 3), torch.nn.Tanh(),
                                            torch.nn.Linear(3, 1)).double()])


@pytest.mark.parametrize("stack_class", STACKS)
def test_stacked_training_equals_one_model_at_a_time(stack_class):
    x, y = _sinc()
    seeds = [5, 6, 7]
    stack = stack_class(_models(seeds))
    alone = _models(seeds)

    phase1 = minimise(stack, x, y, objective="loss", steps=60, lr=1e-2)
    reference1 = minimise_one_at_a_time(alone, x, y, objective="loss", steps=60, lr=1e-2)
    # A threshold between the models' gradient norms, so that some stop early and some hit the cap.
    threshold = phase1.grad_norm[-1].median().item() * 0.7
    phase2 = minimise(stack, x, y, objective="squared_grad_norm", steps=40, lr=1e-4, stop_below=threshold)
    reference2 = minimise_one_at_a_time(alone, x, y, objective="squared_grad_norm", steps=40, lr=1e-4,
                                        stop_below=threshold)

    for trajectory, reference in ((phase1, reference1), (phase2, reference2)):
        for i, record in enumerate(reference):
            rows = trajectory.rows(i)
            assert rows == len(record)
            expected = torch.tensor(record, dtype=DTYPE)
            torch.testing.assert_close(trajectory.loss[:rows, i], expected[:, 0], rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(trajectory.grad_norm[:rows, i], expected[:, 1], rtol=1e-7, atol=1e-12)
    assert len({len(record) for record in reference2}) > 1, "the threshold should stop models at different steps"
    for i, model in enumerate(alone):
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(stack.state_dict(i)[name], tensor, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_phase2_lowers_the_gradient_norm_of_a_real_training():
    x, y = _sinc(200)
    stack = ModelStack(_models(range(4)))
    minimise(stack, x, y, objective="loss", steps=3000, lr=1e-3)
    phase2 = minimise(stack, x, y, objective="squared_grad_norm", steps=300, lr=1e-5, stop_below=1e-12)
    before, after = phase2.grad_norm[0], phase2.grad_norm[-1]
    assert after.pow(2).mean() < 0.1 * before.pow(2).mean(), (before, after)
    assert (after < before).sum() >= 3, (before, after)


def _recomputed(model, x, y):
    """Loss, gradient, Hessian eigenvalues and eigenvectors of the saved weights, through plain autograd."""
    theta = curvature.flatten_params(model)
    mse = curvature.loss_of_flat_params(model, F.mse_loss, x, y)
    loss, grad_norm = curvature.loss_and_gradient_norm(mse, theta)
    gradient = torch.func.grad(mse)(theta)
    eigenvalues, eigenvectors = torch.linalg.eigh(curvature.full_hessian(mse, theta))
    return loss, grad_norm, gradient, eigenvalues, eigenvectors


@pytest.mark.slow
def test_a_run_logs_every_spec_metric_and_draws_the_figures(store_uri, reader, tmp_path):
    """Both phase-2 methods end to end on tiny settings: every number a child holds is recomputed from its weights."""
    epochs, caps, threshold = 120, {"adam": 30, "levenberg_marquardt": 4}, 2e-3
    parent_id = run_quick("part1_2c", store_uri, "n_trainings=3", f"epochs={epochs}", f"phase2_steps={caps['adam']}",
                          f"phase2_lm_steps={caps['levenberg_marquardt']}", "phase2_methods=adam,levenberg_marquardt",
                          f"grad_norm_threshold={threshold}", "log_every=7", seeds=1)
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    assert len(children) == 6 and len({c.data.params["seed"] for c in children}) == 3
    assert sorted(c.data.params["phase2_method"] for c in children) == ["adam"] * 3 + ["levenberg_marquardt"] * 3
    x, y = (t.to(DTYPE) for t in sample_target("sinc", PRESETS["quick"].n_points))
    phase1 = {}  # (seed, method) -> the phase-1 losses logged
    for child in children:
        params, metrics = child.data.params, child.data.metrics
        method = params["phase2_method"]
        assert params["n_params"] == str(n_params(mlp(WIDTHS))) and params["widths"] == "1-10-10-10-1"
        assert params["epochs"] == str(epochs) and params["phase2_steps"] == str(caps[method])
        assert {"model", "seed", "lr", "batch_size", "grad_norm_threshold", "minimal_ratio_tol_definition",
                "grad_null_fraction_definition", "tolerance_grid"} <= set(params)
        assert ("phase2_lr" in params) == (method == "adam")
        assert SPEC_METRICS <= set(metrics) and ("phase2_stalled" in metrics) == (method == "levenberg_marquardt")

        # The numbers describe the saved weights, evaluated on the full data.
        model = mlp(WIDTHS).to(DTYPE)
        model.load_state_dict(torch.load(reader.download(child, "weights/final.pt"), weights_only=True))
        loss, grad_norm, gradient, eigenvalues, eigenvectors = _recomputed(model, x, y)
        assert metrics["final_loss"] == pytest.approx(loss.item(), rel=1e-9)
        assert metrics["final_grad_norm"] == pytest.approx(grad_norm.item(), rel=1e-6)
        with torch.no_grad():
            constant = model(x).std().item() < 1e-9
        assert child.data.tags["hw1track.stuck"] == str(constant).lower()
        logged = torch.load(reader.download(child, "hessian_eigenvalues.pt"), weights_only=True)["eigenvalues"]
        torch.testing.assert_close(logged, eigenvalues)
        assert metrics["minimal_ratio"] == pytest.approx((logged > 0).double().mean().item())
        assert (metrics["lambda_min"], metrics["lambda_max"]) == (logged[0].item(), logged[-1].item())
        # ∇L's share in the near-null space, projected here on autograd's own eigenvectors
        null = eigenvalues.abs() <= float(params["zero_tolerance"]) * eigenvalues.abs().max()
        share = (eigenvectors[:, null].T @ gradient).square().sum() / gradient.square().sum()
        assert metrics["grad_null_fraction"] == pytest.approx(share.item(), rel=1e-4, abs=1e-9)
        ratio = (curvature.full_hessian(curvature.loss_of_flat_params(model, F.mse_loss, x, y),
                                        curvature.flatten_params(model)) @ gradient).norm()
        assert metrics["hessian_grad_ratio"] == pytest.approx(
            (ratio / (eigenvalues.abs().max() * gradient.norm())).item(), rel=1e-6)
        # the minimal ratio at every τ of the grid
        table = pd.read_csv(reader.download(child, "spectrum_by_tolerance.csv"))
        assert table["tolerance"].tolist() == pytest.approx(list(curvature.TOLERANCE_GRID), rel=1e-12)
        for tolerance, value in zip(table["tolerance"], table["minimal_ratio_tol"]):
            assert value == pytest.approx(curvature.minimal_ratio_ignoring_zeros(logged, tolerance), nan_ok=True)
        at_tolerance = table.iloc[(table["tolerance"] - float(params["zero_tolerance"])).abs().argmin()]
        assert at_tolerance["grad_null_fraction"] == pytest.approx(metrics["grad_null_fraction"], rel=1e-9)
        assert at_tolerance["minimal_ratio_tol"] == pytest.approx(metrics["minimal_ratio_tol"], nan_ok=True)

        # Per-iteration history of both phases, with the end of each phase always logged.
        history = {key: sorted(reader.client.get_metric_history(child.info.run_id, key), key=lambda m: m.step)
                   for key in ("loss", "grad_norm")}
        steps = [m.step for m in history["grad_norm"]]
        start = int(metrics["phase2_start_step"])
        assert start == epochs + 1 and steps[0] == 1 and epochs in steps and start in steps
        assert steps[-1] == start + int(metrics["phase2_steps_taken"])
        assert history["grad_norm"][-1].value == pytest.approx(metrics["final_grad_norm"], rel=1e-9)
        reached = metrics["reached_grad_norm_threshold"] == 1.0
        assert reached == (metrics["final_grad_norm"] < threshold)
        stalled = metrics.get("phase2_stalled", 0.0) == 1.0
        assert reached or stalled or metrics["phase2_steps_taken"] == caps[method]
        if method == "levenberg_marquardt":  # every step it takes lowers ‖∇L‖ by at least 1 %
            phase2 = [m.value for m in history["grad_norm"] if m.step >= start]
            assert all(later < 0.99 * earlier for earlier, later in zip(phase2, phase2[1:]))
        phase1[params["seed"], method] = [m.value for m in history["loss"] if m.step < start]
    for seed in {seed for seed, _ in phase1}:  # both methods start from the same phase-1 weights
        assert phase1[seed, "adam"] == phase1[seed, "levenberg_marquardt"]

    for method in caps:
        own = [c for c in children if c.data.params["phase2_method"] == method]
        count = sum(c.data.metrics["reached_grad_norm_threshold"] for c in own)
        assert parent.data.metrics[f"n_reached_grad_norm_threshold_{method}"] == count
    assert parent.data.metrics["n_reached_grad_norm_threshold"] == parent.data.metrics[
        "n_reached_grad_norm_threshold_adam"]

    figures = analysis.figures(reader, parent)
    assert set(figures) == {"minimal_ratio_vs_loss", "minimal_ratio_tol_vs_loss",
                            "minimal_ratio_vs_loss_levenberg_marquardt",
                            "minimal_ratio_tol_vs_loss_levenberg_marquardt", "training_curves",
                            "minimal_ratio_by_tolerance", "hessian_spectra", "gradient_null_space"}
    # one seed: the figure as before replicates existed, its legend on the axes and no correlation in the title
    scatter = figures["minimal_ratio_vs_loss"].axes[0]
    assert sum(len(c.get_offsets()) for c in scatter.collections) == 3
    assert scatter.get_title().endswith("\n3 trainings of DNN 1-10-10-10-1 (P=251) on sinc\nphase 2: Adam on ‖∇L‖²")
    adam = [c for c in children if c.data.params["phase2_method"] == "adam"]
    collapsed = sum(c.data.tags["hw1track.stuck"] == "true" for c in adam)
    assert f"collapsed to a constant, dead ReLUs ({collapsed})" in _legend_texts(scatter.get_legend())
    assert not figures["minimal_ratio_vs_loss"].legends
    live = 3 - collapsed
    by_tolerance = figures["minimal_ratio_by_tolerance"]
    title = by_tolerance.get_suptitle()
    assert "1 seed (no spread)" in title and f"{live} live trainings" in title
    for panel in by_tolerance.axes[:2]:  # one per method (each with its right-hand twin after them)
        assert len(panel.lines) == live + 3  # a thin curve per training, the median, τ's line, the legend's sample
        assert panel.get_xscale() == "log"
    spectra = figures["hessian_spectra"].axes
    assert len(spectra) == 2 and all(len(panel.get_legend().get_texts()) == 3 for panel in spectra)
    assert spectra[0].get_yscale() == "symlog"
    paths = save_figures(figures, tmp_path / "figures")
    assert all(path.stat().st_size > 10_000 for path in paths)

    stated = {claim.id: claim for claim in analysis.claims(reader, parent)}
    assert {"part1_2c.minimal_ratio_vs_loss", "part1_2c.converged_trainings_are_critical_points",
            "part1_2c.minimal_ratio_depends_on_tolerance", "part1_2c.minimal_ratio_vs_loss.levenberg_marquardt",
            "part1_2c.converged_trainings_are_critical_points.levenberg_marquardt",
            "part1_2c.minimal_ratio_depends_on_tolerance.levenberg_marquardt",
            "part1_2c.levenberg_marquardt_reaches_more_critical_points"} == set(stated)
    paired = {}
    for child in children:
        if child.data.tags["hw1track.stuck"] != "true":
            paired.setdefault(child.data.params["seed"], {})[child.data.params["phase2_method"]] = \
                child.data.metrics["reached_grad_norm_threshold"]
    differences = [methods["levenberg_marquardt"] - methods["adam"] for methods in paired.values() if len(methods) == 2]
    comparison = stated["part1_2c.levenberg_marquardt_reaches_more_critical_points"]
    assert comparison.effect == pytest.approx(sum(differences) / len(differences))
    for method in caps:
        own = [c for c in children if c.data.params["phase2_method"] == method]
        reached = int(sum(c.data.metrics["reached_grad_norm_threshold"] for c in own))
        assert f"{reached} of {live} live trainings reached ‖∇L‖ < {threshold:g}" in comparison.detail
        suffix = "" if method == "adam" else f".{method}"
        critical = stated[f"part1_2c.converged_trainings_are_critical_points{suffix}"]
        converged = [c.data.metrics["grad_null_fraction"] for c in own if c.data.tags["hw1track.stuck"] != "true"
                     and c.data.metrics["reached_grad_norm_threshold"] == 1.0]
        if converged:
            flat = sum(share >= analysis.GRADIENT_FLAT_SHARE for share in converged)
            assert critical.effect == pytest.approx(flat / len(converged))
            assert critical.ci_low <= critical.effect <= critical.ci_high
            assert critical.verdict == verdict(critical.ci_low, critical.ci_high, 0.5, direction=-1)
        else:
            assert critical.verdict == "inconclusive"


def _legend_texts(legend) -> list[str]:
    return [text.get_text() for text in legend.get_texts()]


SEEDS, TRAININGS = 2, 6


@pytest.fixture(scope="module")
def collapsing_study(tmp_path_factory):
    """Two replicates at a phase-1 rate of 0.03, 30 times the recipe's: some nets' ReLUs all die, most live."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('part1_2c') / 'mlflow.db'}"
    parent_id = run_quick("part1_2c", uri, f"n_trainings={TRAININGS}", "epochs=60", "lr=0.03", "phase2_steps=10",
                          "log_every=7", seeds=SEEDS)
    reader = StoreReader(uri)
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    collapsed = {r: sum(c.data.tags["hw1track.stuck"] == "true" for c in children
                        if c.data.params["replicate"] == str(r)) for r in range(SEEDS)}
    # the setting must produce what the tests below are about: collapsed nets, and enough live ones for a ρ
    assert 1 <= sum(collapsed.values()) <= SEEDS * TRAININGS - 4, collapsed
    return reader, parent, children, collapsed


@pytest.mark.slow
def test_every_training_of_every_replicate_is_another_seed_of_one_net(collapsing_study):
    _, _, children, _ = collapsing_study
    assert len(children) == SEEDS * TRAININGS
    assert len({child.data.params["seed"] for child in children}) == SEEDS * TRAININGS
    assert len({child.data.tags["hw1track.group"] for child in children}) == 1
    for r in range(SEEDS):
        trainings = sorted(int(c.data.params["training"]) for c in children if c.data.params["replicate"] == str(r))
        assert trainings == list(range(TRAININGS))


@pytest.mark.slow
def test_scatter_shows_all_trainings_and_counts_the_collapsed_ones_per_replicate(collapsing_study):
    reader, parent, children, collapsed = collapsing_study
    figures = analysis.figures(reader, parent)
    live = [c for c in children if c.data.tags["hw1track.stuck"] != "true"]
    for name, ratio in (("minimal_ratio_vs_loss", "minimal_ratio"), ("minimal_ratio_tol_vs_loss", "minimal_ratio_tol")):
        figure = figures[name]
        scatter = figure.axes[0]
        offsets = [c.get_offsets() for c in scatter.collections]
        assert sum(len(points) for points in offsets) == SEEDS * TRAININGS
        assert len(offsets[-1]) == sum(collapsed.values())  # the red crosses, drawn last
        title = scatter.get_title()
        assert f"{SEEDS * TRAININGS} trainings ({TRAININGS} per replicate × {SEEDS} seeds)" in title
        rho = spearmanr([c.data.metrics[ratio] for c in live], [c.data.metrics["final_loss"] for c in live])
        assert f"Spearman ρ = {rho.statistic:.2f}" in title
        assert f"over the {len(live)} trainings that did not collapse" in title
        (legend,) = figure.legends
        (dead,) = [text for text in _legend_texts(legend) if text.startswith("dead ReLUs")]
        assert f"{sum(collapsed.values())} of {SEEDS * TRAININGS} trainings collapsed to a constant" in dead
        for r, count in collapsed.items():
            assert f"replicate {r}: {count} of {TRAININGS}" in dead
    assert f"({TRAININGS} per replicate × {SEEDS} seeds)" in figures["training_curves"].axes[0].get_title()


@pytest.mark.slow
def test_the_claim_correlates_the_live_trainings_of_all_replicates(collapsing_study):
    reader, parent, children, collapsed = collapsing_study
    claims = {claim.id: claim for claim in analysis.claims(reader, parent)}
    assert set(claims) == {"part1_2c.minimal_ratio_vs_loss", "part1_2c.converged_trainings_are_critical_points",
                           "part1_2c.minimal_ratio_depends_on_tolerance"}  # one method: no comparison
    claim = claims["part1_2c.minimal_ratio_vs_loss"]
    fields = claim.as_dict()
    assert {"id", "statement", "effect", "effect_name", "ci_low", "ci_high", "n_seeds", "verdict"} <= set(fields)
    assert claim.id == "part1_2c.minimal_ratio_vs_loss" and claim.statement
    assert claim.n_seeds == SEEDS and claim.verdict in VERDICTS
    live = [c for c in children if c.data.tags["hw1track.stuck"] != "true"]
    expected = spearmanr([c.data.metrics["minimal_ratio"] for c in live],
                         [c.data.metrics["final_loss"] for c in live]).statistic
    assert claim.effect == pytest.approx(expected)
    assert str(len(live)) in claim.effect_name
    assert claim.ci_low < claim.effect < claim.ci_high
    assert claim.verdict == verdict(claim.ci_low, claim.ci_high, 0.0, direction=-1)
    assert f"{sum(collapsed.values())} of {SEEDS * TRAININGS} trainings collapsed" in claim.detail


def _eigenvalues(reader, child):
    return torch.load(reader.download(child, "hessian_eigenvalues.pt"), weights_only=True)["eigenvalues"]


@pytest.mark.slow
def test_the_tolerance_claim_and_figure_compare_each_live_training_at_two_tolerances(collapsing_study):
    reader, parent, children, collapsed = collapsing_study
    live = [c for c in children if c.data.tags["hw1track.stuck"] != "true"]
    changes = [curvature.minimal_ratio_ignoring_zeros(_eigenvalues(reader, c), analysis.HIGH_TOLERANCE)
               - curvature.minimal_ratio_ignoring_zeros(_eigenvalues(reader, c), analysis.LOW_TOLERANCE)
               for c in live]

    (claim,) = [c for c in analysis.claims(reader, parent) if c.id == "part1_2c.minimal_ratio_depends_on_tolerance"]

    assert claim.effect == pytest.approx(sum(changes) / len(changes))
    assert f"over {len(live)} trainings" in claim.effect_name and claim.n_seeds == SEEDS
    if claim.ci_low == claim.ci_low:  # an interval (no NaN): the verdict reads it
        assert claim.ci_low <= claim.effect <= claim.ci_high
        assert claim.verdict == verdict(claim.ci_low, claim.ci_high, 0.0, direction=+1)
    figure = analysis.figures(reader, parent)["minimal_ratio_by_tolerance"]
    assert len(figure.axes[0].lines) == len(live) + 3  # collapsed nets (all eigenvalues 0) are left out
    assert f"{SEEDS} seeds" in figure.get_suptitle()


@pytest.mark.slow
def test_the_critical_point_claim_counts_the_gradient_flat_trainings_below_the_threshold(collapsing_study):
    reader, parent, children, collapsed = collapsing_study
    live = [c for c in children if c.data.tags["hw1track.stuck"] != "true"]
    converged = [c for c in live if c.data.metrics["reached_grad_norm_threshold"] == 1.0]
    flat = sum(c.data.metrics["grad_null_fraction"] >= analysis.GRADIENT_FLAT_SHARE for c in converged)

    (claim,) = [c for c in analysis.claims(reader, parent) if c.id.startswith("part1_2c.converged_trainings")]

    assert f"{len(converged)} of {len(live)} live trainings reached" in claim.detail
    assert f"of the {len(converged)} trainings below the threshold" in claim.effect_name
    if converged:
        assert claim.effect == pytest.approx(flat / len(converged))
        assert claim.ci_low <= claim.effect <= claim.ci_high
        assert claim.verdict == verdict(claim.ci_low, claim.ci_high, analysis.GRADIENT_FLAT_SHARE, direction=-1)
    else:
        assert claim.verdict == "inconclusive" and "no training reached" in claim.detail


@pytest.mark.slow
def test_levenberg_marquardt_phase2_on_the_experiments_stack_is_deterministic_and_leaves_its_weights():
    x, y = _sinc(200)
    stack = DenseReluStack(_models(range(3)))
    minimise(stack, x, y, objective="loss", steps=300, lr=1e-3)
    start = stack.flat().clone()
    cfg = PRESETS["quick"]

    ends = []
    for _ in range(2):
        again = curvature.restacked(stack, start)
        trajectory, own = PHASE2["levenberg_marquardt"](cfg, again, x, y)
        ends.append((again.flat().clone(), trajectory, own["phase2_stalled"]))

    (first, trajectory, stalled), (second, repeated, _) = ends
    assert torch.equal(first, second)
    torch.testing.assert_close(trajectory.grad_norm, repeated.grad_norm, rtol=0, atol=0, equal_nan=True)
    _, gradients = curvature.restacked(stack, first).losses_and_gradients(x, y)
    for i in range(3):
        rows = trajectory.rows(i)
        assert trajectory.grad_norm[rows - 1, i].item() == pytest.approx(gradients[i].norm().item(), rel=1e-12)
        assert bool(trajectory.reached[i]) or bool(stalled[i]) or rows - 1 == cfg.phase2_lm_steps
    assert (trajectory.steps_taken > 0).any(), "from 300 epochs of phase 1 some step lowers ‖∇L‖"
    torch.testing.assert_close(stack.flat(), start, rtol=0, atol=0)  # the phase-1 stack is left as it was
