"""DenseReluStack's hand-written ‖∇L‖² gradient (R-operator passes) equals autograd's double backward."""

import pytest
import torch
import torch.nn.functional as F
from naive_reference import minimise_one_at_a_time

from hw1track.training.full_batch import minimise, squared_grad_norm_objective
from hw1track.training.models import mlp, seeded_model
from hw1track.training.stacks import DenseReluStack, ModelStack
from hw1track.training.targets import sample_target
from runs.part1_2c import DTYPE, WIDTHS


def _sinc(n_points=60):
    return tuple(t.to(DTYPE) for t in sample_target("sinc", n_points))


def _gaussian(n_points, n_inputs, n_outputs, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_points, n_inputs, generator=generator, dtype=DTYPE)
    y = torch.randn(n_points, n_outputs, generator=generator, dtype=DTYPE)
    return x, y


def _models(widths, seeds):
    return [seeded_model(lambda: mlp(widths), seed).to(DTYPE) for seed in seeds]


# part1_2c's net and a shallower, narrower one on one input (the first layer is an outer product), and nets on
# several inputs and outputs (the first layer is a GEMM, the residual has more than one column).
CASES = {
    "1-10-10-10-1": (WIDTHS, _sinc),
    "1-5-5-1": ((1, 5, 5, 1), _sinc),
    "3-6-4-2": ((3, 6, 4, 2), lambda: _gaussian(50, 3, 2)),
    "4-7-1": ((4, 7, 1), lambda: _gaussian(40, 4, 1, seed=1)),
}


def _assert_relus_both_active_and_inactive(stack, x):
    """Otherwise a missing ReLU mask or cross term could go unnoticed: every hidden layer has units of both kinds."""
    with torch.no_grad():
        hidden = stack._forward(x)[1:-1]
    for depth, activation in enumerate(hidden, start=1):
        active = activation > 0
        assert active.any() and (~active).any(), f"hidden layer {depth} is all active or all inactive"
        assert (active.any(dim=1) & (~active).any(dim=1)).any(), f"no unit of layer {depth} switches across inputs"


@pytest.mark.parametrize("case", CASES)
def test_the_hand_written_phase2_gradient_equals_autograds(case):
    widths, data = CASES[case]
    x, y = data()
    stack = DenseReluStack(_models(widths, range(6)))
    _assert_relus_both_active_and_inactive(stack, x)

    losses, objective_gradients, norms = stack.squared_grad_norm_gradients(x, y)
    expected = ModelStack.squared_grad_norm_gradients(stack, x, y)

    assert not objective_gradients.requires_grad and objective_gradients.shape == (6, stack.n_params)
    scale = expected[1].abs().max().item()
    torch.testing.assert_close(objective_gradients, expected[1], rtol=1e-10, atol=1e-13 * scale)
    torch.testing.assert_close(losses, expected[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(norms, expected[2], rtol=1e-12, atol=0)
    # Each model's gradient is its own: the R-passes must not mix models along the stacked dimension.
    for i in range(6):
        alone = ModelStack.squared_grad_norm_gradients(DenseReluStack(_models(widths, [i])), x, y)[1][0]
        torch.testing.assert_close(objective_gradients[i], alone, rtol=1e-10, atol=1e-13 * scale)


def test_the_objective_uses_the_stacks_own_method():
    x, y = _sinc()
    stack = DenseReluStack(_models(WIDTHS, [0, 1]))
    for got, expected in zip(squared_grad_norm_objective(stack, x, y), stack.squared_grad_norm_gradients(x, y)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_another_loss_falls_back_to_autograd():
    x, y = _sinc()
    stack = DenseReluStack(_models(WIDTHS, [2, 3]))
    got = stack.squared_grad_norm_gradients(x, y, F.huber_loss)
    expected = ModelStack.squared_grad_norm_gradients(ModelStack(_models(WIDTHS, [2, 3])), x, y, F.huber_loss)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    # And it is not the MSE's: the fallback was taken.
    mse = stack.squared_grad_norm_gradients(x, y)
    assert not torch.allclose(got[1], mse[1])


@pytest.mark.parametrize("case", ["1-5-5-1", "3-6-4-2"])
def test_phase2_training_equals_one_model_at_a_time(case):
    widths, data = CASES[case]
    x, y = data()
    seeds = [4, 5, 6]
    stack = DenseReluStack(_models(widths, seeds))
    alone = _models(widths, seeds)

    trajectory = minimise(stack, x, y, objective="squared_grad_norm", steps=30, lr=1e-3)
    reference = minimise_one_at_a_time(alone, x, y, objective="squared_grad_norm", steps=30, lr=1e-3)

    for i, record in enumerate(reference):
        expected = torch.tensor(record, dtype=DTYPE)
        torch.testing.assert_close(trajectory.loss[:, i], expected[:, 0], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(trajectory.grad_norm[:, i], expected[:, 1], rtol=1e-7, atol=1e-12)
        for name, tensor in alone[i].state_dict().items():
            torch.testing.assert_close(stack.state_dict(i)[name], tensor, rtol=1e-9, atol=1e-12)
    assert (trajectory.grad_norm[-1] < trajectory.grad_norm[0]).all(), "phase 2 should lower every ‖∇L‖"
