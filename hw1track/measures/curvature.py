"""The local geometry of a loss at given weights: value, gradient norm, full Hessian and its spectrum.

What is measured is kept apart from how it is computed. The measured objects
are functions of ONE flat parameter vector θ ∈ R^P (all parameters, biases
included, laid out by `flat_params.ParamLayout`), so the Hessian is the full
P×P matrix with all cross-layer blocks, never a per-layer block diagonal. The
functions also take a stack of θ's, (M, P), one per model.

Curvature is computed in float64: near a critical point the eigenvalues that
decide the minimal ratio are many orders of magnitude below the largest one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from hw1track.measures.flat_params import ParamLayout

FlatLoss = Callable[[torch.Tensor], torch.Tensor]


def loss_of_flat_params(module: nn.Module, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        x: torch.Tensor, y: torch.Tensor) -> FlatLoss:
    """θ ↦ loss(module with weights θ, x, y): the full-data loss as a function of one flat vector.

    `module` only supplies the architecture (it may live on the meta device).
    """
    layout = ParamLayout(module)

    def flat_loss(theta: torch.Tensor) -> torch.Tensor:
        return loss(functional_call(module, layout.unflatten(theta), (x,)), y)

    return flat_loss


def flatten_params(module: nn.Module) -> torch.Tensor:
    """θ of one module, in the order `loss_of_flat_params` expects."""
    return ParamLayout(module).flatten(module)


def loss_and_gradient_norm(flat_loss: FlatLoss, thetas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L(θ) and ‖∇L(θ)‖ (all parameters together), per θ."""
    def one(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gradient, value = grad_and_value(flat_loss)(theta)
        return value, gradient.norm()

    if thetas.dim() == 1:
        return one(thetas)
    return vmap(one)(thetas)


# How the Hessians are built, under the name runs log. Of the exact methods timed in
# benchmarks/part1_2c_batched.py (kept with it in benchmarks/hessian_methods.py), the fastest
# for part1_2c's 100 models, through DenseReluStack.hessians: 10 ms per model, against 16 ms
# one model at a time by reverse-over-reverse.
HESSIAN_METHOD = "hvp_all_models"


def hessians_from_gradients(gradients: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """(M, P, P) Hessians of M independent losses from their (M, P) gradients, a graph built on the leaf `thetas`.

    Model i's gradient depends on θᵢ alone, so the Jacobian of the stacked
    gradients is block diagonal: one backward pass with direction e_k in every
    row returns row k of all M Hessians at once. P passes over the whole stack
    replace M·P small ones.
    """
    direction = torch.zeros_like(thetas)
    matrix = thetas.new_empty(thetas.shape[0], thetas.shape[1], thetas.shape[1])  # one block: no heap growth
    for k in range(thetas.shape[1]):
        direction.zero_()[:, k] = 1
        (matrix[:, k],) = torch.autograd.grad(gradients, thetas, direction, retain_graph=True)
    return (matrix + matrix.transpose(-1, -2)) / 2


def full_hessian(flat_loss: FlatLoss, thetas: torch.Tensor) -> torch.Tensor:
    """∂²L/∂θ∂θᵀ over all P parameters, symmetrised: (P, P) for one θ, (M, P, P) for a stack.

    `flat_loss` should be built on float64 data, and θ must be float64.
    """
    if thetas.dtype != torch.float64:
        raise ValueError(f"the Hessian is computed in float64, got θ in {thetas.dtype}")
    stacked = (thetas.unsqueeze(0) if thetas.dim() == 1 else thetas).detach().requires_grad_()
    with torch.enable_grad():
        gradients = vmap(grad(flat_loss))(stacked)
    matrix = hessians_from_gradients(gradients, stacked)
    return matrix[0] if thetas.dim() == 1 else matrix


def hessian_eigenvalues(matrix: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues of symmetric (…, P, P) matrices, by the symmetric solver in float64."""
    return torch.linalg.eigvalsh(matrix.double())


# What is reported about a spectrum.

RELATIVE_ZERO_TOLERANCE = 1e-6
MINIMAL_RATIO_DEFINITION = "fraction of Hessian eigenvalues > 0"
MINIMAL_RATIO_TOL_DEFINITION = ("fraction of Hessian eigenvalues > 0 among those with |λ| > tol·max|λ| "
                                "(eigenvalues with |λ| ≤ tol·max|λ| count as zero and are excluded)")


def minimal_ratio(eigenvalues: torch.Tensor) -> float:
    """Fraction of eigenvalues strictly greater than zero."""
    return (eigenvalues > 0).double().mean().item()


def near_zero(eigenvalues: torch.Tensor, relative_tol: float = RELATIVE_ZERO_TOLERANCE) -> torch.Tensor:
    """Mask of the eigenvalues indistinguishable from zero: |λ| ≤ tol·max|λ|."""
    return eigenvalues.abs() <= relative_tol * eigenvalues.abs().max()


def minimal_ratio_ignoring_zeros(eigenvalues: torch.Tensor,
                                 relative_tol: float = RELATIVE_ZERO_TOLERANCE) -> float:
    """Fraction of eigenvalues > 0 among those that are not `near_zero` (NaN if all are)."""
    kept = eigenvalues[~near_zero(eigenvalues, relative_tol)]
    return (kept > 0).double().mean().item() if kept.numel() else float("nan")


@dataclass(frozen=True)
class SpectrumSummary:
    minimal_ratio: float
    minimal_ratio_tol: float
    lambda_min: float
    lambda_max: float
    n_near_zero_eigenvalues: int

    def as_metrics(self) -> dict[str, float]:
        return {"minimal_ratio": self.minimal_ratio, "minimal_ratio_tol": self.minimal_ratio_tol,
                "lambda_min": self.lambda_min, "lambda_max": self.lambda_max,
                "n_near_zero_eigenvalues": float(self.n_near_zero_eigenvalues)}


def summarise_spectrum(eigenvalues: torch.Tensor, relative_tol: float = RELATIVE_ZERO_TOLERANCE) -> SpectrumSummary:
    """The numbers part1_2c reports about one Hessian's eigenvalues."""
    return SpectrumSummary(
        minimal_ratio=minimal_ratio(eigenvalues),
        minimal_ratio_tol=minimal_ratio_ignoring_zeros(eigenvalues, relative_tol),
        lambda_min=eigenvalues.min().item(),
        lambda_max=eigenvalues.max().item(),
        n_near_zero_eigenvalues=int(near_zero(eigenvalues, relative_tol).sum()),
    )
