"""part1_2c: stacked training equals one-at-a-time training, phase 2 drives ‖∇L‖ down, a run logs what SPEC.md
names, and the figures and claim count collapsed nets per replicate and leave them out of the correlation."""

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
from runs.part1_2c import DTYPE, PRESETS, WIDTHS

SPEC_METRICS = {"final_loss", "final_grad_norm", "minimal_ratio", "minimal_ratio_tol", "lambda_min", "lambda_max",
                "n_near_zero_eigenvalues"}


def _sinc(n_points=60):
    return tuple(t.to(DTYPE) for t in sample_target("sinc", n_points))


def _models(seeds):
    return [seeded_model(lambda: mlp(WIDTHS), seed).to(DTYPE) for seed in seeds]


def test_presets_have_the_studys_size():
    assert PRESETS["full"].n_trainings == 100 and PRESETS["quick"].n_trainings >= 20
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


@pytest.mark.slow
def test_a_run_logs_every_spec_metric_and_draws_the_figures(store_uri, reader, tmp_path):
    epochs, cap, threshold = 120, 30, 2e-3
    parent_id = run_quick("part1_2c", store_uri, "n_trainings=4", f"epochs={epochs}", f"phase2_steps={cap}",
                          f"grad_norm_threshold={threshold}", "log_every=7", seeds=1)
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    assert len(children) == 4 and len({c.data.params["seed"] for c in children}) == 4
    x, y = sample_target("sinc", PRESETS["quick"].n_points)
    for child in children:
        params, metrics = child.data.params, child.data.metrics
        assert params["n_params"] == str(n_params(mlp(WIDTHS))) and params["widths"] == "1-10-10-10-1"
        assert params["epochs"] == str(epochs) and params["phase2_steps"] == str(cap)
        assert {"model", "seed", "lr", "batch_size", "phase2_lr", "grad_norm_threshold",
                "minimal_ratio_tol_definition"} <= set(params)
        assert SPEC_METRICS <= set(metrics)

        # The numbers describe the saved weights, evaluated on the full data.
        model = mlp(WIDTHS).to(DTYPE)
        model.load_state_dict(torch.load(reader.download(child, "weights/final.pt"), weights_only=True))
        theta = curvature.flatten_params(model)
        mse = curvature.loss_of_flat_params(model, F.mse_loss, x.to(DTYPE), y.to(DTYPE))
        loss, grad_norm = curvature.loss_and_gradient_norm(mse, theta)
        assert metrics["final_loss"] == pytest.approx(loss.item(), rel=1e-9)
        assert metrics["final_grad_norm"] == pytest.approx(grad_norm.item(), rel=1e-6)
        with torch.no_grad():
            constant = model(x.to(DTYPE)).std().item() < 1e-9
        assert child.data.tags["hw1track.stuck"] == str(constant).lower()
        eigenvalues = torch.load(reader.download(child, "hessian_eigenvalues.pt"), weights_only=True)["eigenvalues"]
        torch.testing.assert_close(eigenvalues, curvature.hessian_eigenvalues(curvature.full_hessian(mse, theta)))
        assert metrics["minimal_ratio"] == pytest.approx((eigenvalues > 0).double().mean().item())
        assert (metrics["lambda_min"], metrics["lambda_max"]) == (eigenvalues[0].item(), eigenvalues[-1].item())

        # Per-iteration history of both phases, with the end of each phase always logged.
        history = {key: reader.client.get_metric_history(child.info.run_id, key) for key in ("loss", "grad_norm")}
        steps = sorted(m.step for m in history["grad_norm"])
        start = int(metrics["phase2_start_step"])
        assert start == epochs + 1 and steps[0] == 1 and epochs in steps and start in steps
        assert steps[-1] == start + int(metrics["phase2_steps_taken"])
        last = max(history["grad_norm"], key=lambda m: m.step)
        assert last.value == pytest.approx(metrics["final_grad_norm"], rel=1e-9)
        reached = metrics["reached_grad_norm_threshold"] == 1.0
        assert reached == (metrics["final_grad_norm"] < threshold)
        assert reached or metrics["phase2_steps_taken"] == cap

    figures = analysis.figures(reader, parent)
    assert set(figures) == {"minimal_ratio_vs_loss", "minimal_ratio_tol_vs_loss", "training_curves"}
    # one seed: the figure as before replicates existed, its legend on the axes and no correlation in the title
    scatter = figures["minimal_ratio_vs_loss"].axes[0]
    assert sum(len(c.get_offsets()) for c in scatter.collections) == 4
    assert scatter.get_title().endswith("\n4 trainings of DNN 1-10-10-10-1 (P=251) on sinc")
    collapsed = sum(child.data.tags["hw1track.stuck"] == "true" for child in children)
    assert f"collapsed to a constant, dead ReLUs ({collapsed})" in _legend_texts(scatter.get_legend())
    assert not figures["minimal_ratio_vs_loss"].legends
    paths = save_figures(figures, tmp_path / "figures")
    assert all(path.stat().st_size > 10_000 for path in paths)


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
    (claim,) = analysis.claims(reader, parent)
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
