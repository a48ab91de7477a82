"""Every measure of a trained model reports its eval-mode number and leaves the model in the mode it found it.

The model has dropout, so the two modes give different numbers: a measure that
ran in train mode would report a noisy, rescaled network instead of the one
the training curves describe. Each measure is checked against the same
quantity computed by hand in eval mode, from plain autograd.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hw1track.measures.interpolation import evaluate_along_line, interpolate_state_dict, snapshot
from hw1track.measures.sensitivity import sensitivity
from hw1track.measures.sharpness import model_loss
from hw1track.training.data import load_mnist, subset
from hw1track.training.evaluation import evaluate
from hw1track.training.models import seeded_model
from hw1track.training.tasks import CLASSIFICATION

MODES = {"from_train_mode": True, "from_eval_mode": False}


def _dropout_mlp(seed: int) -> nn.Module:
    return seeded_model(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.5),
                                              nn.Linear(32, 10)), seed)


def _trained(model: nn.Module, examples, steps: int) -> nn.Module:
    """Full-batch Adam in train mode: an untrained net is near-uniform in either mode, a trained one is not."""
    x, y = examples
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model


def _modes(model: nn.Module) -> set[bool]:
    return {module.training for module in model.modules()}


def _cross_entropy_by_hand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, training: bool) -> float:
    """The float64 mean cross-entropy of a copy of `model` in the given mode (dropout seeded)."""
    model = copy.deepcopy(model).double().train(training)
    torch.manual_seed(0)
    with torch.no_grad():
        return F.cross_entropy(model(x.double()), y).item()


def _sensitivity_by_hand(model: nn.Module, x: torch.Tensor, *, training: bool) -> float:
    """Mean ‖d softmax(f(x)) / dx‖_F, one `torch.autograd.functional.jacobian` per example."""
    model = copy.deepcopy(model).train(training)
    torch.manual_seed(0)
    norms = [torch.autograd.functional.jacobian(lambda e: torch.softmax(model(e.unsqueeze(0)), -1).squeeze(0),
                                                example).double().norm() for example in x]
    return torch.stack(norms).mean().item()


@pytest.fixture(scope="module")
def examples():
    mnist = load_mnist()
    return subset(mnist.train_x, mnist.train_y, 300, seed=0)


@pytest.mark.parametrize("was_training", MODES.values(), ids=MODES.keys())
def test_sensitivity_is_the_eval_mode_jacobian(examples, was_training):
    model = _trained(_dropout_mlp(0), examples, 60).train(was_training)
    x = examples[0][:30]
    by_hand = _sensitivity_by_hand(model, x, training=False)
    assert _sensitivity_by_hand(model, x, training=True) != pytest.approx(by_hand, rel=1e-2)

    measured = sensitivity(model, x, chunk_size=16)

    assert measured == pytest.approx(by_hand, rel=1e-5)
    assert _modes(model) == {was_training}


@pytest.mark.parametrize("was_training", MODES.values(), ids=MODES.keys())
def test_sharpness_loss_is_the_eval_mode_loss(examples, was_training):
    model = _trained(_dropout_mlp(1), examples, 60).train(was_training)
    x, y = examples
    by_hand = _cross_entropy_by_hand(model, x, y, training=False)
    assert _cross_entropy_by_hand(model, x, y, training=True) != pytest.approx(by_hand, rel=1e-2)

    theta, loss_and_gradient = model_loss(model, x, y)
    assert _modes(model) == {was_training}
    (value, _), (again, _) = loss_and_gradient(theta), loss_and_gradient(theta)

    assert value == pytest.approx(by_hand, rel=1e-12)
    assert again == value  # no dropout mask: the same θ always gives the same loss for L-BFGS-B
    assert _modes(model) == {was_training}


@pytest.mark.parametrize("was_training", MODES.values(), ids=MODES.keys())
def test_interpolation_evaluates_every_point_in_eval_mode(examples, was_training):
    # Two stages of one training, as part1_3c_i's endpoints share their initial weights: the whole line is trained.
    model = _trained(_dropout_mlp(2), examples, 30)
    theta1 = snapshot(model)
    theta2 = snapshot(_trained(model, examples, 60))
    alphas = [0.0, 0.5, 1.0]
    model = _dropout_mlp(4).train(was_training)

    rows = evaluate_along_line(model, theta1, theta2, alphas, {"train": examples}, CLASSIFICATION)

    for alpha, row in zip(alphas, rows):
        point = _dropout_mlp(4)
        point.load_state_dict(interpolate_state_dict(theta1, theta2, alpha))
        by_hand = _cross_entropy_by_hand(point, *examples, training=False)
        assert _cross_entropy_by_hand(point, *examples, training=True) != pytest.approx(by_hand, rel=1e-2)
        assert row["train_loss"] == pytest.approx(by_hand, rel=1e-5)
    assert _modes(model) == {was_training}


@pytest.mark.parametrize("was_training", MODES.values(), ids=MODES.keys())
def test_evaluate_reports_the_eval_mode_loss(examples, was_training):
    model = _trained(_dropout_mlp(5), examples, 60).train(was_training)
    by_hand = _cross_entropy_by_hand(model, *examples, training=False)
    assert _cross_entropy_by_hand(model, *examples, training=True) != pytest.approx(by_hand, rel=1e-2)

    measured = evaluate(model, examples, CLASSIFICATION)

    assert measured["loss"] == pytest.approx(by_hand, rel=1e-5)
    assert _modes(model) == {was_training}
