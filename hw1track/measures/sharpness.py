"""Sharpness of a minimum after Keskar et al. (2017), in the full parameter space (A = I).

What is measured: the largest relative rise of the loss within a small box
around the weights θ,

    φ_ε = (max_{y ∈ C_ε} L(θ + y) − L(θ)) / (1 + L(θ)) × 100,
    C_ε = {y : |y_i| ≤ ε (|θ_i| + 1)},

so that a minimum is "sharp" when a perturbation of relative size ε already
raises the loss. The box scales with |θ_i| so that large and small weights are
perturbed in proportion.

How it is computed: the inner maximum is approximated, as in the paper, by a
few iterations of L-BFGS-B minimising −L(θ + y) over the box from y = 0, with
the exact gradient. The answer is a lower bound on the true maximum; the best
point seen during the search is kept, so it is never below L(θ). The loss is an
arbitrary `(vector) -> (value, gradient)` function in float64, so the optimiser
can be checked on losses whose maximum is known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, minimize
from torch import nn
from torch.func import functional_call

from hw1track.measures.flat_params import ParamLayout
from hw1track.training.evaluation import eval_mode

LossAndGradient = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class Sharpness:
    """φ and what it was computed from."""

    phi: float
    base_loss: float  # L(θ)
    max_loss: float  # the best L(θ + y) found in the box
    perturbation: np.ndarray  # the y that reached max_loss
    iterations: int
    evaluations: int


def box_radius(theta: np.ndarray, epsilon: float) -> np.ndarray:
    """ε (|θ_i| + 1): how far each coordinate may move."""
    return epsilon * (np.abs(theta) + 1.0)


def sharpness(loss_and_gradient: LossAndGradient, theta: np.ndarray, epsilon: float,
              maxiter: int = 10) -> Sharpness:
    """φ_ε at `theta` for the loss `loss_and_gradient` (float64 value and gradient)."""
    theta = np.asarray(theta, dtype=np.float64)
    radius = box_radius(theta, epsilon)
    base_loss, _ = loss_and_gradient(theta)
    best = {"loss": float(base_loss), "y": np.zeros_like(theta)}

    def negative_loss(y: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = loss_and_gradient(theta + y)
        if value > best["loss"]:
            best["loss"], best["y"] = float(value), y.copy()
        return -value, -np.asarray(gradient, dtype=np.float64)

    result = minimize(negative_loss, np.zeros_like(theta), jac=True, method="L-BFGS-B",
                      bounds=Bounds(-radius, radius), options={"maxiter": maxiter})
    phi = (best["loss"] - base_loss) / (1.0 + base_loss) * 100.0
    return Sharpness(phi=phi, base_loss=float(base_loss), max_loss=best["loss"], perturbation=best["y"],
                     iterations=int(result.nit), evaluations=int(result.nfev))


def model_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, LossAndGradient]:
    """The model's flat float64 parameter vector θ, and the cross-entropy L(θ') with its gradient on (x, y).

    Float64 throughout, because the box is ~1e-3 of each weight: in float32 the
    rise of the loss would be near its rounding error and the line search of
    L-BFGS-B would stall on noise. The model's own weights are left untouched,
    and it runs in eval mode at every θ', back in its own mode in between, so
    that dropout neither adds noise to the search nor differs from the model's
    reported loss.
    """
    layout = ParamLayout(model)
    theta = layout.flatten(model).double().cpu().numpy()
    device = next(model.parameters()).device
    x64 = x.to(device=device, dtype=torch.float64)

    def loss_and_gradient(vector: np.ndarray) -> tuple[float, np.ndarray]:
        flat = torch.tensor(vector, dtype=torch.float64, device=device, requires_grad=True)
        with eval_mode(model):
            value = F.cross_entropy(functional_call(model, layout.unflatten(flat), (x64,)), y)
        (gradient,) = torch.autograd.grad(value, flat)
        return value.item(), gradient.cpu().numpy()

    return theta, loss_and_gradient
