"""The full Hessian against known answers, and the minimal-ratio definitions on known spectra.

Every exact method of benchmarks/hessian_methods.py is checked, the library's among them: agreeing on
known answers and with each other is what lets the benchmark time them as interchangeable.
"""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hessian_methods import HESSIAN_METHODS, full_hessian
from torch import nn

from hw1track.measures import curvature
from hw1track.training.models import mlp
from hw1track.training.stacks import DenseReluStack, ModelStack
from runs import part1_2c

METHODS = list(HESSIAN_METHODS)


def _least_squares(n=40, d=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("method", METHODS)
def test_hessian_of_linear_least_squares_is_2_XtX_over_n(method):
    x, y = _least_squares()
    model = nn.Linear(3, 1).double()
    mse = curvature.loss_of_flat_params(model, F.mse_loss, x, y)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)  # weights then bias, as θ is laid out
    expected = 2 * design.T @ design / len(x)

    hessian = full_hessian(mse, curvature.flatten_params(model), method)

    assert hessian.shape == (4, 4)
    torch.testing.assert_close(hessian, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_a_stack_of_models_gets_one_hessian_each(method):
    x, y = _least_squares()
    models = [nn.Linear(3, 1).double() for _ in range(3)]
    stack = ModelStack(models)
    mse = curvature.loss_of_flat_params(stack.template, F.mse_loss, x, y)

    stacked = full_hessian(mse, stack.flat(), method, models_at_once=2)

    assert stacked.shape == (3, 4, 4)
    for i, model in enumerate(models):
        alone = full_hessian(curvature.loss_of_flat_params(model, F.mse_loss, x, y), curvature.flatten_params(model),
                             method)
        torch.testing.assert_close(stacked[i], alone, rtol=1e-12, atol=1e-12)


def _tiny_relu_net():
    torch.manual_seed(3)
    model = mlp((1, 4, 3, 1)).double()
    x = torch.linspace(0.05, 1, 25, dtype=torch.float64).unsqueeze(1)
    y = torch.sinc(5 * x)
    return model, curvature.loss_of_flat_params(model, F.mse_loss, x, y), curvature.flatten_params(model), (x, y)


@pytest.mark.parametrize("method", METHODS)
def test_hessian_of_a_relu_network_matches_finite_differences_of_the_gradient(method):
    model, mse, theta, _ = _tiny_relu_net()
    step = 1e-6

    def gradient(at):
        at = at.clone().requires_grad_()
        return torch.autograd.grad(mse(at), at)[0]

    columns = []
    for j in range(len(theta)):
        shift = torch.zeros_like(theta)
        shift[j] = step
        columns.append((gradient(theta + shift) - gradient(theta - shift)) / (2 * step))
    finite_differences = torch.stack(columns, dim=1)

    hessian = full_hessian(mse, theta, method)

    assert hessian.shape == (len(theta), len(theta)) == (27, 27)
    torch.testing.assert_close(hessian, finite_differences, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("stack_class", [ModelStack, DenseReluStack])
def test_a_stacks_own_hessians_match_one_model_at_a_time(stack_class):
    """stack.hessians differentiates the stack's gradient pass (hand-written for DenseReluStack) for all models at once."""
    x = torch.linspace(0.05, 1, 25, dtype=torch.float64).unsqueeze(1)
    y = torch.sinc(5 * x)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(mlp((1, 4, 3, 1)).double())
    stack = stack_class(models)

    hessians = stack.hessians(x, y)

    assert hessians.shape == (3, 27, 27)
    for i, model in enumerate(models):
        alone = full_hessian(curvature.loss_of_flat_params(model, F.mse_loss, x, y), curvature.flatten_params(model),
                             "reverse_over_reverse")
        torch.testing.assert_close(hessians[i], alone, rtol=1e-12, atol=1e-13)


def test_the_stack_hessians_are_the_method_part1_2c_logs():
    """part1_2c logs `hessian_method` = curvature.HESSIAN_METHOD: the stack's Hessians are that method's."""
    x, y = _least_squares()
    stack = ModelStack([nn.Linear(3, 1).double() for _ in range(2)])
    expected = full_hessian(curvature.loss_of_flat_params(nn.Linear(3, 1).double(), F.mse_loss, x, y), stack.flat(),
                            curvature.HESSIAN_METHOD)
    assert torch.equal(stack.hessians(x, y), expected)
    assert "hessian_method" not in {field.name for field in dataclasses.fields(part1_2c.Config)}


def test_the_hessian_couples_layers():
    """The full matrix, not a per-layer block diagonal: first- and last-layer weights interact."""
    model, mse, theta, _ = _tiny_relu_net()
    hessian = curvature.full_hessian(mse, theta)
    first_layer = slice(0, 8)  # 4 weights + 4 biases
    last_layer = slice(27 - 4, 27)  # 3 weights + 1 bias
    assert hessian[first_layer, last_layer].abs().max() > 1e-3


def test_hessian_needs_float64():
    model, mse, theta, _ = _tiny_relu_net()
    with pytest.raises(ValueError, match="float64"):
        curvature.full_hessian(mse, theta.float())


def test_loss_and_gradient_norm_are_those_of_all_parameters_together():
    model, mse, theta, (x, y) = _tiny_relu_net()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))

    value, grad_norm = curvature.loss_and_gradient_norm(mse, theta)

    assert value.item() == pytest.approx(loss.item(), rel=1e-12)
    assert grad_norm.item() == pytest.approx(norm.item(), rel=1e-10)


def test_eigenvalues_of_a_rotated_diagonal_matrix():
    spectrum = torch.tensor([-3.0, -0.5, 0.0, 2.0, 7.0], dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    matrix = rotation @ torch.diag(spectrum) @ rotation.T
    torch.testing.assert_close(curvature.hessian_eigenvalues(matrix), spectrum, rtol=0, atol=1e-12)


def test_minimal_ratio_definitions_on_a_known_spectrum():
    # max|λ| = 5, so with tol 1e-6 the three values within 5e-6 of zero count as zero.
    eigenvalues = torch.tensor([-2.0, -1e-9, 0.0, 1e-9, 1.0, 3.0, 5.0], dtype=torch.float64)

    summary = curvature.summarise_spectrum(eigenvalues, relative_tol=1e-6)

    assert summary.minimal_ratio == pytest.approx(4 / 7)  # 1e-9, 1, 3, 5 are > 0
    assert summary.n_near_zero_eigenvalues == 3
    assert summary.minimal_ratio_tol == pytest.approx(3 / 4)  # 1, 3, 5 of -2, 1, 3, 5
    assert (summary.lambda_min, summary.lambda_max) == (-2.0, 5.0)
    assert set(summary.as_metrics()) == {"minimal_ratio", "minimal_ratio_tol", "lambda_min", "lambda_max",
                                         "n_near_zero_eigenvalues"}


def test_minimal_ratio_tolerance_is_relative_to_the_largest_magnitude():
    scaled = torch.tensor([-4e3, -1e-3, 2e-3, 1e3], dtype=torch.float64)  # |λ| ≤ 4e-3 counts as zero
    summary = curvature.summarise_spectrum(scaled, relative_tol=1e-6)
    assert summary.n_near_zero_eigenvalues == 2 and summary.minimal_ratio_tol == pytest.approx(1 / 2)
    assert math.isnan(curvature.minimal_ratio_ignoring_zeros(torch.zeros(3, dtype=torch.float64)))
