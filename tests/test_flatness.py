"""Interpolation, sensitivity and sharpness: each checked against a case whose answer is known independently."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hw1track.measures.interpolation import (alpha_grid, evaluate_along_line, interpolate_state_dict,
                                             interpolate_weights, snapshot)
from hw1track.measures.sensitivity import input_jacobian_norms, sensitivity
from hw1track.measures.sharpness import box_radius, model_loss, sharpness
from hw1track.training.data import load_mnist
from hw1track.training.evaluation import evaluate_splits
from hw1track.training.models import cnn, mlp, seeded_model
from hw1track.training.tasks import CLASSIFICATION


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.view(torch.int32)  # compares -0.0 and +0.0 as different, unlike torch.equal


@pytest.fixture(scope="module")
def images():
    mnist = load_mnist()
    return mnist.test_x[:300], mnist.test_y[:300]


# --- interpolation ---------------------------------------------------------------------------------------

def test_alpha_grid_holds_0_and_1_exactly_with_steps_of_at_most_0_05():
    alphas = alpha_grid(-1.0, 2.0, 20)
    assert len(alphas) == 61 and alphas[0] == -1.0 and alphas[-1] == 2.0
    assert 0.0 in alphas and 1.0 in alphas
    assert max(np.diff(alphas)) <= 0.05 + 1e-12


def test_interpolation_endpoints_are_bit_identical_and_midpoints_follow_the_formula():
    theta1 = torch.tensor([1.5, -0.0, 3.0e-8, -2.25])
    theta2 = torch.tensor([0.0, 0.1, -7.0, 0.0])
    assert torch.equal(_bits(interpolate_weights(theta1, theta2, 0.0)), _bits(theta1))
    assert torch.equal(_bits(interpolate_weights(theta1, theta2, 1.0)), _bits(theta2))
    for alpha in (-1.0, 0.3, 1.75):
        expected = ((1 - alpha) * theta1.double() + alpha * theta2.double()).float()
        assert torch.equal(interpolate_weights(theta1, theta2, alpha), expected)


def test_state_dict_endpoints_reproduce_the_trained_models_metrics_exactly(images):
    first, second = seeded_model(lambda: mlp((784, 16, 10)), 1), seeded_model(lambda: mlp((784, 16, 10)), 2)
    theta1, theta2 = snapshot(first), snapshot(second)
    for alpha, model in ((0.0, first), (1.0, second)):
        mixed = interpolate_state_dict(theta1, theta2, alpha)
        assert all(torch.equal(_bits(mixed[k]), _bits(v)) for k, v in model.state_dict().items())
    splits = {"test": images}
    rows = evaluate_along_line(mlp((784, 16, 10)), theta1, theta2, [0.0, 0.5, 1.0], splits, CLASSIFICATION)
    assert rows[0] == {"alpha": 0.0, **evaluate_splits(first, splits, CLASSIFICATION)}
    assert rows[2] == {"alpha": 1.0, **evaluate_splits(second, splits, CLASSIFICATION)}
    assert rows[1]["test_loss"] != rows[0]["test_loss"]
    assert torch.equal(snapshot(first)["1.weight"], theta1["1.weight"])  # evaluating never touches the inputs
    with pytest.raises(ValueError, match="keys"):
        interpolate_state_dict(theta1, {**theta2, "extra": torch.zeros(1)}, 0.5)


# --- sensitivity -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("factory", [lambda: mlp((784, 32, 10)), lambda: cnn((4,), (16,))], ids=["mlp", "cnn"])
def test_sensitivity_matches_a_direct_jacobian_and_ignores_the_chunk_size(images, factory):
    model = seeded_model(factory, 0)
    x = images[0][:40]
    norms = input_jacobian_norms(model, x, chunk_size=16)
    for i in (0, 17):
        jacobian = torch.autograd.functional.jacobian(
            lambda example: torch.softmax(model(example.unsqueeze(0)), dim=-1).squeeze(0), x[i])
        assert jacobian.shape == (10, 1, 28, 28)
        assert norms[i].item() == pytest.approx(jacobian.double().norm().item(), rel=1e-5)
    values = [sensitivity(model, x, chunk_size=size) for size in (1, 7, 16, 40, 512)]
    assert max(values) - min(values) <= 1e-6 * max(values)
    assert values[2] == norms.mean().item()  # chunk size 16, as above
    # the per-example norm is not the norm of the batch's summed Jacobian
    summed = torch.autograd.functional.jacobian(lambda batch: torch.softmax(model(batch), -1).sum(0), x[:16])
    assert summed.double().norm().item() / 16 != pytest.approx(values[0], rel=1e-3)


# --- sharpness -------------------------------------------------------------------------------------------

def test_sharpness_of_a_linear_loss_is_the_box_corner():
    rng = np.random.default_rng(0)
    theta, w = rng.normal(size=200), rng.normal(size=200)
    w[:5] = 0.0  # directions the loss does not care about

    def linear(vector):
        return float(w @ vector), w.copy()

    epsilon = 1e-3
    found = sharpness(linear, theta, epsilon, maxiter=10)
    rise = np.sum(np.abs(w) * epsilon * (np.abs(theta) + 1))
    assert found.base_loss == pytest.approx(w @ theta)
    assert found.max_loss == pytest.approx(w @ theta + rise, rel=1e-10)
    assert found.phi == pytest.approx(rise / (1 + w @ theta) * 100, rel=1e-8)
    assert np.all(np.abs(found.perturbation) <= box_radius(theta, epsilon) * (1 + 1e-12))
    assert found.max_loss == pytest.approx(linear(theta + found.perturbation)[0], rel=1e-12)


def test_sharpness_of_a_convex_quadratic_reaches_the_farthest_corner():
    rng = np.random.default_rng(1)
    theta, centre = rng.normal(size=50), rng.normal(size=50)

    def quadratic(vector):
        return 0.5 * float(np.sum((vector - centre) ** 2)), vector - centre

    epsilon = 5e-4
    radius = box_radius(theta, epsilon)
    corner = theta + np.sign(theta - centre) * radius
    found = sharpness(quadratic, theta, epsilon, maxiter=10)
    assert found.max_loss == pytest.approx(quadratic(corner)[0], rel=1e-10)
    assert np.all(np.abs(found.perturbation) <= radius * (1 + 1e-12))
    assert found.iterations <= 10


def test_model_loss_is_the_float64_cross_entropy_with_its_gradient(images):
    model = seeded_model(lambda: mlp((784, 16, 10)), 3)
    before = snapshot(model)
    x, y = images
    theta, loss_and_gradient = model_loss(model, x, y)
    assert theta.dtype == np.float64 and theta.size == sum(p.numel() for p in model.parameters())
    value, gradient = loss_and_gradient(theta)
    with torch.no_grad():
        reference = F.cross_entropy(model.double()(x.double()), y).item()
    model.float()
    assert value == pytest.approx(reference, rel=1e-12)
    direction = np.random.default_rng(2).normal(size=theta.size)
    step = 1e-6
    ahead, behind = loss_and_gradient(theta + step * direction)[0], loss_and_gradient(theta - step * direction)[0]
    numeric = (ahead - behind) / (2 * step)
    assert gradient @ direction == pytest.approx(numeric, rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    found = sharpness(loss_and_gradient, theta, 1e-3, maxiter=5)
    assert found.phi > 0 and found.max_loss > found.base_loss == pytest.approx(value)
    assert np.all(np.abs(found.perturbation) <= box_radius(theta, 1e-3) * (1 + 1e-12))
