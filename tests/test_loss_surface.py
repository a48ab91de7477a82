"""The loss on a plane of filter-normalised directions: the directions, the grid, and the batched evaluation."""

import pytest
import torch
from torch import nn

from hw1track.measures.loss_surface import evaluate_plane, evaluate_weight_sets, filter_normalized, \
    filter_normalized_directions, plane_coordinates, plane_points, random_direction, trained_weights
from hw1track.training.data import load_mnist, subset
from hw1track.training.evaluation import evaluate_splits
from hw1track.training.fit import fit
from hw1track.training.models import mlp, seeded_model
from hw1track.training.sinks import NullSink
from hw1track.training.tasks import CLASSIFICATION, REGRESSION


def _conv_net() -> nn.Module:
    """Filters of 4-D convolutions, a batch-norm scale and shift (1-D), and a dense layer: every kind of tensor."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _reference_filter_normalised(direction: dict, weights: dict) -> dict:
    """Li et al.'s loop, transcribed: per filter d of a direction, d *= ‖w‖ / (‖d‖ + 1e-10); 1-D tensors zeroed."""
    normalised = {}
    for name, d in direction.items():
        d = d.clone()
        if d.dim() <= 1:
            d.fill_(0)
        else:
            for row, w in zip(d, weights[name]):
                row.mul_(w.norm() / (row.norm() + 1e-10))
        normalised[name] = d
    return normalised


def test_filter_normalisation_gives_every_row_the_norm_of_the_weight_row_and_biases_nothing():
    model = _conv_net()
    weights = trained_weights(model)
    with torch.no_grad():  # rows of very different norms, so that one scale for a whole layer would be wrong
        weights["4.weight"] *= torch.linspace(0.1, 10, 5)[:, None]
    raw = random_direction(weights, torch.Generator().manual_seed(0))
    direction = filter_normalized(raw, weights)
    assert direction.keys() == weights.keys()
    for name, w in weights.items():
        d = direction[name]
        assert d.shape == w.shape
        if w.dim() == 1:  # biases and the batch-norm scale and shift stay put
            assert torch.count_nonzero(d) == 0, name
            continue
        assert d.flatten(1).norm(dim=1) == pytest.approx(w.flatten(1).norm(dim=1), rel=1e-6), name
        # the rows keep the random draw's orientation: only their lengths change
        cosine = nn.functional.cosine_similarity(d.flatten(1), raw[name].flatten(1), dim=1)
        assert cosine == pytest.approx(torch.ones(len(w)), rel=1e-6), name
    reference = _reference_filter_normalised(raw, weights)
    for name in weights:
        torch.testing.assert_close(direction[name], reference[name], rtol=1e-6, atol=0)


def test_directions_are_the_same_for_the_same_seed_and_differ_between_the_two_axes():
    weights = trained_weights(seeded_model(lambda: mlp((20, 8, 3)), 0))
    first, second = filter_normalized_directions(weights, torch.Generator().manual_seed(7))
    again, _ = filter_normalized_directions(weights, torch.Generator().manual_seed(7))
    other, _ = filter_normalized_directions(weights, torch.Generator().manual_seed(8))
    assert all(torch.equal(first[name], again[name]) for name in weights)
    assert not torch.equal(first["1.weight"], second["1.weight"])
    assert not torch.equal(first["1.weight"], other["1.weight"])


def test_the_grid_is_symmetric_with_the_solution_exactly_at_its_centre():
    coordinates = plane_coordinates(1.0, 10)
    assert len(coordinates) == 21 and coordinates[10] == 0.0
    assert coordinates[0] == -1.0 and coordinates[-1] == 1.0
    assert coordinates == [-c for c in reversed(coordinates)]
    assert plane_coordinates(0.3, 3)[3] == 0.0 and plane_coordinates(0.3, 3)[-1] == pytest.approx(0.3, abs=0)
    with pytest.raises(ValueError, match="at least one step"):
        plane_coordinates(1.0, 0)


def test_the_centre_point_is_the_weights_themselves_and_other_points_move_along_both_directions():
    weights = trained_weights(seeded_model(lambda: mlp((6, 5, 2)), 1))
    directions = filter_normalized_directions(weights, torch.Generator().manual_seed(2))
    stacked = plane_points(weights, directions, torch.tensor([[0.0, 0.0], [0.5, -2.0]], dtype=torch.float64))
    for name, w in weights.items():
        assert torch.equal(stacked[name][0], w)
        torch.testing.assert_close(stacked[name][1], w + 0.5 * directions[0][name] - 2.0 * directions[1][name])
    with pytest.raises(ValueError, match="3 coordinates per point for 2 directions"):
        plane_points(weights, directions, torch.zeros(1, 3))


def test_along_a_filter_normalised_direction_a_linear_fit_costs_a_squared_weight_norm():
    """Known answer: f(x) = Wx + b fits y exactly at θ, and the inputs are the unit vectors e_1 … e_d.

    At θ + a·δ the residual of input e_i in output j is a·δ_ji, so the mean squared error is
    a²·‖δ‖²/(d·k) = a²·‖W‖²/(d·k), because filter normalisation gives each row δ_j the norm of W_j;
    off the axes it is (a²·‖δ‖² + 2ab·⟨δ, η⟩ + b²·‖η‖²)/(d·k). The bias moves in neither direction.
    """
    d, k = 6, 3
    model = nn.Linear(d, k)
    with torch.no_grad():
        model.weight.copy_(torch.arange(d * k, dtype=torch.float32).reshape(k, d) / 7 - 1)
        model.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    x = torch.eye(d)
    y = (model(x)).detach()
    weights = trained_weights(model)
    directions = filter_normalized_directions(weights, torch.Generator().manual_seed(5))
    coordinates = plane_coordinates(2.0, 4)
    rows = evaluate_plane(model, weights, directions, coordinates, {"train": (x, y)}, REGRESSION,
                          points_per_forward=7)
    assert len(rows) == len(coordinates) ** 2
    squared_norm = weights["weight"].double().pow(2).sum().item()
    delta, eta = (direction["weight"].double() for direction in directions)
    for row in rows:
        a, b = row["x"], row["y"]
        expected = (a * a * delta.pow(2).sum() + 2 * a * b * (delta * eta).sum() + b * b * eta.pow(2).sum()) / (d * k)
        assert row["train_loss"] == pytest.approx(expected.item(), rel=1e-5, abs=1e-10)
        if b == 0:
            assert row["train_loss"] == pytest.approx(a * a * squared_norm / (d * k), rel=1e-5, abs=1e-10)
    assert [(row["x"], row["y"]) for row in rows[:3]] == [(-2.0, -2.0), (-2.0, -1.5), (-2.0, -1.0)]  # x-major


def test_the_grid_centre_is_the_trained_models_own_loss_and_accuracy():
    mnist = load_mnist()
    train = subset(mnist.train_x, mnist.train_y, 512, 0)
    model = seeded_model(lambda: mlp((784, 32, 10)), 0)
    fit(model, train, task=CLASSIFICATION, epochs=2, batch_size=64, lr=1e-3, seed=0, eval_splits={"train": train},
        sink=NullSink())
    examples = subset(*train, 300, 1)
    weights = trained_weights(model)
    directions = filter_normalized_directions(weights, torch.Generator().manual_seed(0))
    rows = evaluate_plane(model, weights, directions, plane_coordinates(1.0, 2), {"train": examples}, CLASSIFICATION)
    (centre,) = [row for row in rows if row["x"] == 0 and row["y"] == 0]
    own = evaluate_splits(model, {"train": examples}, CLASSIFICATION)
    assert centre["train_loss"] == pytest.approx(own["train_loss"], rel=1e-6)
    assert centre["train_acc"] == own["train_acc"]
    # a trained solution: the points around it are worse on average, and the corners most of all
    others = [row["train_loss"] for row in rows if (row["x"], row["y"]) != (0, 0)]
    assert sum(others) / len(others) > centre["train_loss"]
    corners = [row["train_loss"] for row in rows if abs(row["x"]) == 1 and abs(row["y"]) == 1]
    assert min(corners) > centre["train_loss"]


def test_batched_points_give_what_each_point_gives_alone_whatever_the_chunks():
    torch.manual_seed(0)
    model = mlp((12, 9, 4))
    x, y = torch.randn(700, 12), torch.randint(0, 4, (700,))  # more than one chunk of examples
    weights = trained_weights(model)
    directions = filter_normalized_directions(weights, torch.Generator().manual_seed(1))
    coordinates = plane_coordinates(1.5, 2)
    one_by_one = evaluate_plane(model, weights, directions, coordinates, {"train": (x, y)}, CLASSIFICATION,
                                points_per_forward=1)
    for chunk in (4, 25, 64):
        batched = evaluate_plane(model, weights, directions, coordinates, {"train": (x, y)}, CLASSIFICATION,
                                 points_per_forward=chunk)
        assert [(r["x"], r["y"], r["train_acc"]) for r in batched] == [(r["x"], r["y"], r["train_acc"])
                                                                       for r in one_by_one]
        assert [r["train_loss"] for r in batched] == pytest.approx([r["train_loss"] for r in one_by_one], rel=1e-5)
    # and what a plain model loaded with the point's weights reports
    probe = mlp((12, 9, 4))
    for row in one_by_one[::5]:
        point = plane_points(weights, directions, torch.tensor([[row["x"], row["y"]]], dtype=torch.float64))
        probe.load_state_dict({name: value[0] for name, value in point.items()})
        alone = evaluate_splits(probe, {"train": (x, y)}, CLASSIFICATION)
        assert row["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-5)
        assert row["train_acc"] == alone["train_acc"]


def test_points_are_evaluated_in_eval_mode_without_gradients_and_the_model_keeps_its_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    model.train()
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    live = dict(model.named_parameters())  # parameters that require gradients: nothing may be recorded for them
    directions = filter_normalized_directions(trained_weights(model), torch.Generator().manual_seed(0))
    stacked = plane_points(live, directions, torch.tensor([[0.0, 0.0], [0.2, 0.1]], dtype=torch.float64))
    measured = evaluate_weight_sets(model, stacked, (x, y), CLASSIFICATION)
    assert not measured["loss"].requires_grad and not any(value.requires_grad for value in stacked.values())
    assert model.training and all(module.training for module in model.modules())
    with torch.no_grad():
        model.eval()
        expected = nn.functional.cross_entropy(model(x), y).item()
        model.train()
    assert measured["loss"][0].item() == pytest.approx(expected, rel=1e-6)  # dropout off: deterministic
    again = evaluate_weight_sets(model, stacked, (x, y), CLASSIFICATION)
    assert torch.equal(again["loss"], measured["loss"])

