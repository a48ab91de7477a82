"""The loss around a trained model on a plane of two filter-normalised random directions (Li et al. 2018).

What is measured: L(θ + a·δ + b·η) for (a, b) on a square grid centred on the
trained weights θ, where δ and η are random Gaussian directions in weight space,
filter-normalised. The points are only evaluated, never trained.

Why filter normalisation: a ReLU net computes the same function when a neuron's
incoming weights are multiplied by c > 0 and its outgoing ones divided by c, so
the scale of the weights says nothing about flatness, yet a direction of a fixed
size moves a net with small weights further, relative to its weights, than one
with large weights, and its surface looks sharper. Solutions of different batch
sizes end with different weight norms, so raw directions would compare their
scales rather than their shapes. Li et al. ("Visualizing the Loss Landscape of
Neural Nets", NeurIPS 2018) rescale each filter of a direction (a row of a
weight: one output neuron of a dense layer, one output channel of a convolution)
to the norm of the same filter of θ, so that a step of 1 moves every neuron by as
much as its own weights; the surfaces of different solutions then share one
scale. This follows their code, github.com/tomgoldstein/loss-landscape,
net_plotter.py: `normalize_direction` with norm='filter' (each filter d of the
direction times ‖w‖ / (‖d‖ + 1e-10)) and `normalize_directions_for_weights` with
ignore='biasbn' (a direction with at most one dimension, a bias or a batch-norm
scale, is set to zero). Directions cover the parameters only, as their
dir_type='weights': buffers such as batch norm's running statistics stay as
trained.

How it is computed: one forward of a small net over a few thousand examples is
too short to keep the cores busy, and a grid has hundreds of points. So the
weights of many grid points are stacked and evaluated in one forward,
`torch.func.functional_call` under `torch.func.vmap`, in eval mode and without
gradients. Points are taken `points_per_forward` at a time and examples
`EVAL_CHUNK` at a time, so memory stays near points_per_forward × (P + EVAL_CHUNK ×
the widest layer) floats whatever the grid and the data: for part1_3c_i's MLP
(P = 109,386, widest hidden layer 128) 32 points need about 5.6 M floats, 22 MB.
Losses are summed in float64 over the chunks of examples, as `evaluation` does
for every reported number, so the grid's centre is the trained model's own loss
up to float32 rounding of the forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from hw1track.training.evaluation import EVAL_CHUNK, eval_mode
from hw1track.training.tasks import Split, Task

Params = dict[str, torch.Tensor]

FILTER_EPSILON = 1e-10  # the reference code's guard against a zero row in the direction
POINTS_PER_FORWARD = 32  # grid points per vmapped forward; see the module docstring for the memory it takes


def trained_weights(model: nn.Module) -> Params:
    """The parameters a direction perturbs, detached: the model's later training or loading cannot move them."""
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def random_direction(weights: Mapping[str, torch.Tensor], generator: torch.Generator) -> Params:
    """Standard Gaussian entries shaped like `weights`, drawn tensor by tensor in their order.

    They are drawn on the CPU and then moved, so one seed gives the same
    direction on every device.
    """
    return {name: torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
            for name, w in weights.items()}


def filter_normalized(direction: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> Params:
    """`direction` with every filter (row along the first dimension) rescaled to the norm of that row of `weights`.

    Tensors of at most one dimension (biases, batch-norm scales) are zeroed:
    the reference code's ignore='biasbn' (see the module docstring).
    """
    if direction.keys() != weights.keys():
        raise ValueError(f"direction and weights differ in keys: {sorted(set(direction) ^ set(weights))}")
    return {name: _rows_rescaled(d, weights[name]) if d.dim() > 1 else torch.zeros_like(d)
            for name, d in direction.items()}


def _rows_rescaled(direction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    rows, target = direction.flatten(1), weight.flatten(1)
    scale = target.norm(dim=1) / (rows.norm(dim=1) + FILTER_EPSILON)
    return (rows * scale[:, None]).reshape(direction.shape)


def filter_normalized_directions(weights: Mapping[str, torch.Tensor], generator: torch.Generator,
                                 count: int = 2) -> list[Params]:
    """`count` random directions (the plane's axes), each filter-normalised to `weights`, drawn one after another."""
    return [filter_normalized(random_direction(weights, generator), weights) for _ in range(count)]


def plane_coordinates(span: float, steps: int) -> list[float]:
    """k·span/steps for k = −steps … steps: 2·steps + 1 coordinates from −span to span.

    Each is an integer multiple divided once (not start + i·step), so the
    centre is 0.0 exactly and the grid is symmetric: its middle point is the
    trained model itself.
    """
    if steps < 1:
        raise ValueError(f"a plane needs at least one step on each side, got {steps}")
    return [k * span / steps for k in range(-steps, steps + 1)]


def plane_points(weights: Mapping[str, torch.Tensor], directions: Sequence[Mapping[str, torch.Tensor]],
                 points: torch.Tensor) -> Params:
    """θ + Σ_j points[:, j]·direction_j for every row of `points` (M × number of directions), stacked: (M, *shape)."""
    if points.shape[1] != len(directions):
        raise ValueError(f"{points.shape[1]} coordinates per point for {len(directions)} directions")
    return _moved(weights, _direction_rows(directions), points)


def _direction_rows(directions: Sequence[Mapping[str, torch.Tensor]]) -> Params:
    """Per parameter, the directions as the rows of one (number of directions, numel) matrix."""
    return {name: torch.stack([direction[name].flatten() for direction in directions]) for name in directions[0]}


@torch.no_grad()
def _moved(weights: Mapping[str, torch.Tensor], rows: Mapping[str, torch.Tensor], points: torch.Tensor) -> Params:
    """One `addmm` per parameter: the points' weights are written in a single pass over M × numel floats.

    A sum of scaled directions would make a pass per direction and term, and
    those passes took about half the time of a chunk on a few hundred examples.
    At a zero coefficient the sum adds exactly 0, so the centre is θ itself.
    """
    stacked = {}
    for name, w in weights.items():
        coefficients = points.to(dtype=w.dtype, device=w.device)
        stacked[name] = torch.addmm(w.flatten().unsqueeze(0), coefficients, rows[name]).reshape(len(points), *w.shape)
    return stacked


def evaluate_weight_sets(model: nn.Module, stacked: Mapping[str, torch.Tensor], split: Split,
                         task: Task) -> dict[str, torch.Tensor]:
    """Mean loss (and accuracy) over the whole `split` of each of M stacked parameter sets, as float64 (M,) tensors.

    `model` lends its architecture and its buffers; its own parameters are not
    used, and it is left in the mode it was in.
    """
    x, y = split

    def sums(params: Mapping[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = functional_call(model, params, (xb,))
        correct = (out.argmax(dim=1) == yb).sum() if task.classification else out.new_zeros((), dtype=torch.long)
        return task.loss(out, yb, reduction="sum"), correct

    per_point = vmap(sums, in_dims=(0, None, None))
    m = len(next(iter(stacked.values())))
    loss_sum = torch.zeros(m, dtype=torch.float64, device=x.device)
    correct = torch.zeros(m, dtype=torch.int64, device=x.device)
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(x), EVAL_CHUNK):
            losses, hits = per_point(stacked, x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK])
            loss_sum += losses.double()
            correct += hits
    n_values = len(x) if task.classification else y.numel()
    result = {"loss": loss_sum / n_values}
    if task.classification:
        result["acc"] = correct.double() / len(x)
    return result


def evaluate_plane(model: nn.Module, weights: Mapping[str, torch.Tensor],
                   directions: Sequence[Mapping[str, torch.Tensor]], coordinates: Sequence[float],
                   splits: Mapping[str, Split], task: Task, *,
                   points_per_forward: int = POINTS_PER_FORWARD) -> list[dict[str, float]]:
    """Full-split metrics of θ + x·δ + y·η for every (x, y) of `coordinates` squared: one row per point.

    Rows come x-major ({'x', 'y', 'train_loss', 'train_acc', ...}, one metric per
    split as `evaluation.evaluate_splits` names them), so a (len, len) array of
    any column is indexed [x, y].
    """
    if len(directions) != 2:
        raise ValueError(f"a plane has two directions, got {len(directions)}")
    grid = torch.tensor(coordinates, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    rows_of = _direction_rows(directions)
    rows = []
    for start in range(0, len(points), points_per_forward):
        chunk = points[start:start + points_per_forward]
        stacked = _moved(weights, rows_of, chunk)
        measured = {f"{name}_{key}": value.tolist() for name, split in splits.items()
                    for key, value in evaluate_weight_sets(model, stacked, split, task).items()}
        for i, (a, b) in enumerate(chunk.tolist()):
            rows.append({"x": a, "y": b, **{key: values[i] for key, values in measured.items()}})
    return rows
