"""The full Hessian against known answers, the minimal-ratio definitions and the gradient's place in the spectrum on
known spectra, and Levenberg–Marquardt on ∇L against functions whose critical points are known.

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
from hw1track.training.full_batch import BatchedAdam
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
    """stack.hessians differentiates the stack's gradient pass (hand-written for DenseReluStack), all models at once."""
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


# The minimal ratio at every tolerance, and the gradient's place in the spectrum.

def _with_spectrum(spectrum, seed=4):
    """A symmetric matrix with the given eigenvalues, in a random orthonormal basis (returned too)."""
    size = len(spectrum)
    basis, _ = torch.linalg.qr(torch.randn(size, size, generator=torch.Generator().manual_seed(seed),
                                           dtype=torch.float64))
    return basis @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ basis.T, basis


def test_the_tolerance_grid_is_logarithmic_and_holds_the_tolerances_the_analysis_reads():
    grid = curvature.tolerance_grid(-10, -1, 4)
    ratios = torch.tensor(grid[1:], dtype=torch.float64) / torch.tensor(grid[:-1], dtype=torch.float64)
    assert len(grid) == 37 and grid[0] == pytest.approx(1e-10) and grid[-1] == pytest.approx(0.1)
    torch.testing.assert_close(ratios, torch.full_like(ratios, 10 ** 0.25), rtol=1e-12, atol=0)
    assert {1e-8, 1e-6, 1e-4} <= set(curvature.TOLERANCE_GRID)


def test_the_minimal_ratio_as_a_function_of_the_tolerance_on_a_matrix_with_a_known_spectrum():
    # max|λ| = 4; at τ the eigenvalues with |λ| ≤ 4τ count as zero.
    spectrum = [-2.0, -3e-3, -2e-7, -1e-9, 2e-8, 4e-6, 1e-3, 0.5, 1.0, 4.0]
    matrix, _ = _with_spectrum(spectrum)
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    tolerances = (1e-12, 1e-9, 1e-7, 1e-5, 1e-3, 0.2)
    # by hand: (negative, positive) eigenvalues left at each τ (threshold 4e-12, 4e-9, 4e-7, 4e-5, 4e-3, 0.8)
    expected = [(4, 6), (3, 6), (2, 5), (2, 4), (1, 3), (1, 2)]

    curves = curvature.tolerance_curves(eigenvalues.unsqueeze(0),
                                        torch.full((1, 10), 0.1, dtype=torch.float64), tolerances)

    for k, (negative, positive) in enumerate(expected):
        assert (int(curves.n_negative[0, k]), int(curves.n_positive[0, k])) == (negative, positive), tolerances[k]
        assert int(curves.n_near_zero[0, k]) == 10 - negative - positive
        assert curves.minimal_ratio_tol[0, k].item() == positive / (negative + positive)  # in float64, exactly
        # the curve is the existing tolerance variant, τ by τ
        assert curves.minimal_ratio_tol[0, k].item() == pytest.approx(
            curvature.minimal_ratio_ignoring_zeros(eigenvalues, tolerances[k]))
    table = curves.table(0)
    assert table["tolerance"] == list(tolerances) and len(table["minimal_ratio_tol"]) == len(tolerances)


def test_the_tolerance_curve_is_nan_where_every_eigenvalue_counts_as_zero():
    curves = curvature.tolerance_curves(torch.zeros(1, 3, dtype=torch.float64), torch.full((1, 3), 1 / 3,
                                        dtype=torch.float64), (1e-6,))
    assert math.isnan(curves.minimal_ratio_tol[0, 0].item()) and int(curves.n_near_zero[0, 0]) == 3


def _coordinates(*values):
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("coordinates, expected", [
    (_coordinates(0, 0, 0, 3, -4, 0), 1.0),  # inside the null space: a gradient-flat point
    (_coordinates(1, -2, 2, 0, 0, 0), 0.0),  # outside it: the Hessian sees all of the gradient
    (_coordinates(1, 0, 2, 0, 2, 0), 4 / 9),  # ‖P_null g‖² = 4 of ‖g‖² = 9
])
def test_the_null_space_fraction_of_a_gradient_built_in_a_known_basis(coordinates, expected):
    # Eigenvalues 3, -1, 2 on the first three basis vectors; 1e-5·max|λ| and two exact zeros on the last three.
    matrix, basis = _with_spectrum([3.0, -1.0, 2.0, 3e-5, 0.0, 0.0])
    gradient = basis @ coordinates
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)

    energy = curvature.gradient_energy(eigenvectors, gradient)
    fraction = curvature.grad_null_fraction(eigenvalues, energy, relative_tol=1e-4)

    assert energy.sum().item() == pytest.approx(1.0)
    assert fraction.item() == pytest.approx(expected, abs=1e-10)
    # a tolerance below 1e-5 leaves the 3e-5 direction outside the null space
    outside = coordinates[3].item() ** 2 / coordinates.square().sum().item()
    assert curvature.grad_null_fraction(eigenvalues, energy, 1e-6).item() == pytest.approx(expected - outside,
                                                                                          abs=1e-10)


def test_the_null_space_fraction_of_a_quadratic_with_a_linear_term():
    """L(θ) = ½θᵀAθ + bᵀθ with A singular: ∇L = Aθ + b, and only b can reach the null space of A."""
    matrix, basis = _with_spectrum([5.0, 2.0, -1.0, 0.0, 0.0], seed=7)
    inside, outside = basis[:, 3] * 0.3 - basis[:, 4] * 0.4, basis[:, 0] * 1.2
    b = inside + outside
    theta = basis[:, 1] * 0.5 - basis[:, 2] * 0.25

    def loss(t):
        return 0.5 * t @ matrix @ t + b @ t

    hessian = curvature.full_hessian(loss, theta)
    gradient = torch.func.grad(loss)(theta)
    eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
    fraction = curvature.grad_null_fraction(eigenvalues, curvature.gradient_energy(eigenvectors, gradient))

    torch.testing.assert_close(hessian, matrix, rtol=1e-12, atol=1e-12)
    assert fraction.item() == pytest.approx(inside.square().sum().item() / gradient.square().sum().item(), rel=1e-10)
    assert 0.01 < fraction.item() < 0.99


def test_the_hessian_gradient_ratio_is_the_norm_of_the_hessian_times_the_gradient():
    matrix, basis = _with_spectrum([4.0, -2.0, 0.5, 0.0])
    gradients = torch.stack([basis @ _coordinates(1, 1, 1, 1), basis[:, 3], basis[:, 0]])
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)

    ratio = curvature.hessian_grad_ratio(eigenvalues.expand(3, 4),
                                         curvature.gradient_energy(eigenvectors.expand(3, 4, 4), gradients))

    expected = (gradients @ matrix).norm(dim=1) / (4.0 * gradients.norm(dim=1))
    torch.testing.assert_close(ratio, expected, rtol=1e-12, atol=1e-12)
    assert ratio[1].item() == pytest.approx(0.0, abs=1e-12) and ratio[2].item() == pytest.approx(1.0)


# Levenberg–Marquardt on ∇L.

def test_levenberg_marquardt_steps_solve_the_damped_gauss_newton_system():
    matrix, _ = _with_spectrum([3.0, -1.5, 0.2, 1e-7, 0.0])
    gradient = torch.randn(5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    dampings = (1e-6, 1e-2, 10.0)

    steps = curvature.levenberg_marquardt_steps(matrix.unsqueeze(0), gradient.unsqueeze(0), dampings)

    assert steps.shape == (3, 1, 5)
    for step, damping in zip(steps, dampings):
        mu = damping * 3.0 ** 2
        expected = -torch.linalg.solve(matrix @ matrix + mu * torch.eye(5, dtype=torch.float64), matrix @ gradient)
        torch.testing.assert_close(step[0], expected, rtol=1e-9, atol=1e-12)
    assert torch.equal(curvature.levenberg_marquardt_steps(torch.zeros(1, 2, 2, dtype=torch.float64),
                                                           torch.ones(1, 2, dtype=torch.float64), (1.0,)),
                       torch.zeros(1, 1, 2, dtype=torch.float64))


def _double_well(theta):
    """Critical points (−1, −1) and (1, 1) (minima) and (0, 0) (a saddle), in a curved valley b = a."""
    return (theta[0] ** 2 - 1) ** 2 + 10 * (theta[1] - theta[0]) ** 2


CRITICAL_POINTS = torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)


def _adam_on_squared_gradient_norm(field, thetas, steps, lr):
    """part1_2c's Adam phase 2 on a known function: BatchedAdam along ∇‖∇L‖² = 2H∇L."""
    thetas = thetas.clone()
    optimizer = BatchedAdam(thetas, lr=lr)
    for _ in range(steps):
        _, gradients = field.losses_and_gradients(thetas)
        optimizer.update(2 * (field.hessians(thetas) @ gradients.unsqueeze(-1)).squeeze(-1))
    return field.losses_and_gradients(thetas)[1].norm(dim=1)


def test_levenberg_marquardt_reaches_critical_points_where_adam_at_1e_5_does_not():
    field = curvature.FlatLossField(_double_well)
    starts = torch.tensor([[0.3, -0.8], [2.0, -1.5], [-0.4, 0.9], [1.7, 2.5]], dtype=torch.float64)
    budget, threshold = 30, 1e-10

    search = curvature.levenberg_marquardt(field, starts, steps=budget, stop_below=threshold)

    assert bool(search.reached.all()) and not bool(search.stalled.any())
    assert int(search.steps_taken.max()) < budget
    distances = torch.cdist(search.thetas, CRITICAL_POINTS).min(dim=1).values
    assert float(distances.max()) < 1e-8
    assert (search.thetas.abs().max(dim=1).values < 1e-8).any(), "the saddle is a critical point too: some reach it"
    final_norms = field.losses_and_gradients(search.thetas)[1].norm(dim=1)
    assert bool((final_norms < threshold).all())
    assert bool((_adam_on_squared_gradient_norm(field, starts, budget, 1e-5) > 1.0).all())


def test_levenberg_marquardt_records_every_step_and_never_raises_the_gradient_norm():
    field = curvature.FlatLossField(_double_well)
    starts = torch.tensor([[0.3, -0.8], [1.0, 1.0], [2.0, -1.5]], dtype=torch.float64)

    search = curvature.levenberg_marquardt(field, starts, steps=3, stop_below=1e-10)

    assert search.steps_taken.tolist()[1] == 0 and bool(search.reached[1])  # it starts at a critical point
    for i in range(3):
        rows = int(search.steps_taken[i]) + 1
        norms = search.grad_norm[:rows, i]
        assert bool((norms[1:] < 0.99 * norms[:-1]).all())
        assert torch.isnan(search.grad_norm[rows:, i]).all()
        losses, gradients = field.losses_and_gradients(search.thetas[i:i + 1])
        assert norms[-1].item() == pytest.approx(gradients.norm().item(), rel=1e-12)
        assert search.loss[rows - 1, i].item() == pytest.approx(losses.item(), rel=1e-12)
    assert int(search.steps_taken[0]) == 3 and not bool(search.reached[0] | search.stalled[0])  # the step cap


def test_levenberg_marquardt_stalls_at_a_gradient_flat_point():
    """L(a, b) = a² + b: ∇L = (2a, 1) never vanishes, and H = diag(2, 0) cannot see its second component."""
    field = curvature.FlatLossField(lambda theta: theta[0] ** 2 + theta[1])
    search = curvature.levenberg_marquardt(field, torch.tensor([[3.0, 1.0]], dtype=torch.float64), steps=20,
                                           stop_below=1e-6)

    assert bool(search.stalled[0]) and not bool(search.reached[0]) and int(search.steps_taken[0]) < 20
    assert search.thetas[0, 0].abs().item() < 1e-6 and search.thetas[0, 1].item() == 1.0
    _, gradients = field.losses_and_gradients(search.thetas)
    eigenvalues, eigenvectors = torch.linalg.eigh(field.hessians(search.thetas))
    assert gradients.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert curvature.grad_null_fraction(eigenvalues, curvature.gradient_energy(eigenvectors, gradients)).item() \
        == pytest.approx(1.0, abs=1e-10)


def _relu_nets(seeds, widths=(1, 4, 3, 1)):
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(mlp(widths).double())
    return models


@pytest.mark.parametrize("stack_class", [ModelStack, DenseReluStack])
def test_a_restacked_stack_is_the_same_architecture_at_other_weights(stack_class):
    x = torch.linspace(0.05, 1, 25, dtype=torch.float64).unsqueeze(1)
    y = torch.sinc(5 * x)
    stack = stack_class(_relu_nets([0, 1, 2]))
    elsewhere = _relu_nets([5, 6])
    thetas = ModelStack(elsewhere).flat()

    field = curvature.StackField(stack, x, y)
    losses, gradients = field.losses_and_gradients(thetas)
    hessians = field.hessians(thetas)

    reference = stack_class(elsewhere)
    expected_losses, expected_gradients = reference.losses_and_gradients(x, y)
    torch.testing.assert_close(losses, expected_losses, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gradients, expected_gradients, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(hessians, reference.hessians(x, y).detach(), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(stack.flat(), ModelStack(_relu_nets([0, 1, 2])).flat(), rtol=0, atol=0)  # untouched


def test_a_stack_with_buffers_is_not_restacked():
    models = [nn.Sequential(nn.Linear(1, 2), nn.BatchNorm1d(2)).double() for _ in range(2)]
    with pytest.raises(ValueError, match="buffers"):
        curvature.restacked(ModelStack(models), torch.zeros(1, 8, dtype=torch.float64))
