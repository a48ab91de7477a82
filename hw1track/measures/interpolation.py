"""The straight line through two trained models in weight space: θ(α) = (1−α)·θ₁ + α·θ₂.

Points on the line are only evaluated, never trained, so the curve shows the
loss landscape between (and beyond) two solutions. The endpoints must be the
trained models themselves, bit for bit: the formula is exact at α = 0 and 1
except that it may turn a −0.0 into +0.0, so the endpoints are returned as
copies rather than recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from hw1track.training.evaluation import eval_mode, evaluate_splits
from hw1track.training.tasks import Split, Task

StateDict = Mapping[str, torch.Tensor]


def alpha_grid(start: float, stop: float, per_unit: int) -> list[float]:
    """α from `start` to `stop` in steps of 1/`per_unit`, with 0 and 1 on the grid exactly.

    Each α is an integer divided by `per_unit` (not start + i·step), so no
    rounding can move the endpoints off 0.0 and 1.0.
    """
    first, last = round(start * per_unit), round(stop * per_unit)
    return [k / per_unit for k in range(first, last + 1)]


def interpolate_weights(theta1: torch.Tensor, theta2: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1−α)·θ₁ + α·θ₂ for one tensor (a parameter or a flat parameter vector), in its own dtype."""
    if theta1.shape != theta2.shape:
        raise ValueError(f"cannot interpolate shapes {tuple(theta1.shape)} and {tuple(theta2.shape)}")
    if alpha == 0:
        return theta1.detach().clone()
    if alpha == 1:
        return theta2.detach().clone()
    if not theta1.is_floating_point():
        if not torch.equal(theta1, theta2):  # e.g. a step counter: no meaningful midpoint
            raise ValueError("non-float tensors differ between the two models")
        return theta1.detach().clone()
    # float64 arithmetic so that interior points carry no more rounding than the final cast
    mixed = (1.0 - alpha) * theta1.detach().double() + alpha * theta2.detach().double()
    return mixed.to(theta1.dtype)


def interpolate_state_dict(theta1: StateDict, theta2: StateDict, alpha: float) -> dict[str, torch.Tensor]:
    """θ(α) for every entry of two state_dicts of the same architecture."""
    if theta1.keys() != theta2.keys():
        raise ValueError(f"state_dicts differ in keys: {sorted(set(theta1) ^ set(theta2))}")
    return {key: interpolate_weights(theta1[key], theta2[key], alpha) for key in theta1}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the weights, unaffected by later training or loading."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def evaluate_along_line(model: nn.Module, theta1: StateDict, theta2: StateDict, alphas: Iterable[float],
                        splits: Mapping[str, Split], task: Task) -> list[dict[str, float]]:
    """Full-set metrics of θ(α) for each α: one row {'alpha', 'train_loss', ...} per point.

    `model` only lends its architecture: its weights are overwritten at every α.
    It is evaluated in eval mode, like the trained endpoints' reported metrics,
    and left in the mode it was in.
    """
    rows = []
    with eval_mode(model):
        for alpha in alphas:
            model.load_state_dict(interpolate_state_dict(theta1, theta2, alpha))
            rows.append({"alpha": alpha, **evaluate_splits(model, splits, task)})
    return rows
