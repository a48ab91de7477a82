"""The local geometry of a loss at given weights: value, gradient norm, full Hessian and its spectrum.

What is measured is kept apart from how it is computed. The measured objects
are functions of ONE flat parameter vector θ ∈ R^P (all parameters, biases
included, laid out by `flat_params.ParamLayout`), so the Hessian is the full
P×P matrix with all cross-layer blocks, never a per-layer block diagonal. The
functions also take a stack of θ's, (M, P), one per model.

Curvature is computed in float64: near a critical point the eigenvalues that
decide the minimal ratio are many orders of magnitude below the largest one.

Most of those eigenvalues are numerically zero, so a count of signs depends on
where zero ends: `spectrum_by_tolerance` gives the minimal ratio at every
tolerance τ of a grid, with the share of ‖∇L‖² that lies in the near-null
space |λ| ≤ τ·max|λ|. That share tells a critical point (a small gradient the
Hessian sees) from a gradient-flat point (Frye et al. 2021, "Critical
point-finding methods reveal gradient-flat regions of deep network losses"):
there ∇L lies in the Hessian's kernel, ∇‖∇L‖² = 2H∇L vanishes with ∇L ≠ 0, and
any method that minimises ‖∇L‖² can stop. `levenberg_marquardt` is such a
method with second-order steps, for losses small enough to afford their full
Hessian at every iteration.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    """Mask of the eigenvalues indistinguishable from zero: |λ| ≤ tol·max|λ|, per spectrum of a (…, P) stack."""
    return eigenvalues.abs() <= relative_tol * eigenvalues.abs().amax(dim=-1, keepdim=True)


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


# The minimal ratio and the gradient's place in the spectrum, at every tolerance.

def tolerance_grid(lowest_exponent: int = -10, highest_exponent: int = -1, per_decade: int = 4) -> tuple[float, ...]:
    """τ = 10^(k / per_decade) from 10^lowest to 10^highest: where "numerically zero" may be taken to end.

    Float64 eigenvalues of a 251×251 Hessian carry rounding errors of about
    P·ε·max|λ| ≈ 1e-13·max|λ|, so below 1e-10 the signs are noise; above 1e-1
    hardly any eigenvalue is left.
    """
    exponents = range(lowest_exponent * per_decade, highest_exponent * per_decade + 1)
    return tuple(10.0 ** (k / per_decade) for k in exponents)


TOLERANCE_GRID = tolerance_grid()
TOLERANCE_GRID_DESCRIPTION = "τ = 10^(k/4) from 1e-10 to 1e-1 (37 values)"
TOLERANCE_CURVE_DEFINITION = ("at each τ: fraction of Hessian eigenvalues > τ·max|λ| among those with |λ| > τ·max|λ| "
                              "(minimal_ratio_tol at tol = τ), and grad_null_fraction at tol = τ")
GRAD_NULL_FRACTION_DEFINITION = ("‖P∇L‖²/‖∇L‖², P the projection on the Hessian's eigenvectors with |λ| ≤ tol·max|λ| "
                                 "(its near-null space): near 1 at a gradient-flat point, near 0 at a critical point")
HESSIAN_GRAD_RATIO_DEFINITION = ("‖H∇L‖/(max|λ|·‖∇L‖), no tolerance: 0 when ∇L lies in the Hessian's kernel "
                                 "(gradient-flat), 1 when ∇L lies along the eigenvector of the largest |λ|")


def gradient_energy(eigenvectors: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """The share of ‖∇L‖² along each eigenvector, (cᵢ)²/‖c‖² with c = Vᵀ∇L: (…, P), each row summing to 1.

    NaN where ∇L = 0 exactly (a collapsed net): there is no direction to share.
    """
    squared = (eigenvectors.mT @ gradients.unsqueeze(-1)).squeeze(-1).square()
    return squared / squared.sum(dim=-1, keepdim=True)


def grad_null_fraction(eigenvalues: torch.Tensor, energy: torch.Tensor,
                       relative_tol: float = RELATIVE_ZERO_TOLERANCE) -> torch.Tensor:
    """‖P_null ∇L‖²/‖∇L‖² per model: the `gradient_energy` carried by the `near_zero` eigenvalues."""
    return (energy * near_zero(eigenvalues, relative_tol)).sum(dim=-1)


def hessian_grad_ratio(eigenvalues: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """‖H∇L‖/(max|λ|·‖∇L‖) per model, from the eigenbasis: √Σ (λᵢ/max|λ|)²·energyᵢ.

    Frye et al.'s test for gradient-flatness, with no tolerance to choose: it
    weighs each direction by its curvature where `grad_null_fraction` cuts at τ.
    """
    relative = eigenvalues / eigenvalues.abs().amax(dim=-1, keepdim=True)
    return (relative.square() * energy).sum(dim=-1).sqrt()


@dataclass(frozen=True)
class ToleranceCurves:
    """What the spectra of a stack of models say at each tolerance τ: (…, T) per count or fraction."""

    tolerances: tuple[float, ...]
    n_near_zero: torch.Tensor  # |λ| ≤ τ·max|λ|
    n_positive: torch.Tensor  # λ > τ·max|λ|
    n_negative: torch.Tensor  # λ < −τ·max|λ|
    grad_null_fraction: torch.Tensor

    @property
    def minimal_ratio_tol(self) -> torch.Tensor:
        """Fraction of the eigenvalues that are not near zero that are positive; NaN where none is left."""
        kept = self.n_positive + self.n_negative
        return torch.where(kept > 0, self.n_positive.double() / kept.clamp_min(1), torch.nan)

    def table(self, index: int) -> dict[str, list]:
        """Model `index`'s row of every curve, one entry per τ: the columns of its CSV artifact."""
        return {"tolerance": list(self.tolerances),
                "minimal_ratio_tol": self.minimal_ratio_tol[index].tolist(),
                "grad_null_fraction": self.grad_null_fraction[index].tolist(),
                "n_near_zero": self.n_near_zero[index].tolist(),
                "n_positive": self.n_positive[index].tolist(),
                "n_negative": self.n_negative[index].tolist()}


def tolerance_curves(eigenvalues: torch.Tensor, energy: torch.Tensor,
                     tolerances: Sequence[float] = TOLERANCE_GRID) -> ToleranceCurves:
    """`minimal_ratio_ignoring_zeros` and `grad_null_fraction` at every τ of `tolerances`, for (M, P) spectra."""
    scale = eigenvalues.abs().amax(dim=-1, keepdim=True).unsqueeze(-1)  # (M, 1, 1)
    thresholds = torch.tensor(tolerances, dtype=eigenvalues.dtype, device=eigenvalues.device).unsqueeze(-1) * scale
    values = eigenvalues.unsqueeze(-2)  # (M, 1, P) against (M, T, 1)
    null = values.abs() <= thresholds
    return ToleranceCurves(tuple(tolerances), null.sum(dim=-1), (values > thresholds).sum(dim=-1),
                           (values < -thresholds).sum(dim=-1), (energy.unsqueeze(-2) * null).sum(dim=-1))


# Walking to a critical point with second-order steps.

class GradientField(Protocol):
    """The losses of a stack of weights (k, P), one model per row, with their gradients and full Hessians."""

    def losses_and_gradients(self, thetas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def hessians(self, thetas: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class FlatLossField:
    """One `FlatLoss` evaluated at every row of a stack of θ's (float64 for the Hessians)."""

    flat_loss: FlatLoss

    def losses_and_gradients(self, thetas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gradients, values = vmap(grad_and_value(self.flat_loss))(thetas)
        return values, gradients

    def hessians(self, thetas: torch.Tensor) -> torch.Tensor:
        return full_hessian(self.flat_loss, thetas)


def restacked(stack: Any, thetas: torch.Tensor) -> Any:
    """A `training.stacks` model stack's architecture at other weights: a new stack whose θ is a copy of `thetas`.

    A stack's passes read every weight through its (M, P) leaf θ, so a shallow
    copy with another θ is the same code at other points, with as many models
    as `thetas` has rows, and without building a module per model. Buffers have
    one row per model of the original stack, so stacks with buffers are refused.
    """
    if stack.buffers:
        raise ValueError("a stack with buffers keeps one row of them per model: it cannot take other rows of θ")
    other = copy.copy(stack)
    other.theta = thetas.detach().clone().requires_grad_()
    return other


@dataclass(frozen=True)
class StackField:
    """The full-batch losses of a model stack's architecture on (x, y), at any weights, through its own passes."""

    stack: Any
    x: torch.Tensor
    y: torch.Tensor

    def losses_and_gradients(self, thetas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return restacked(self.stack, thetas).losses_and_gradients(self.x, self.y)

    def hessians(self, thetas: torch.Tensor) -> torch.Tensor:
        return restacked(self.stack, thetas).hessians(self.x, self.y).detach()


# Levenberg–Marquardt on ∇L: one full Hessian per iteration, and the damping chosen from this ladder, μ = δ·max|λ|².
# The eigendecomposition solves the damped system for every δ at once and a trial costs one gradient pass, so
# the ladder is searched whole instead of adjusting μ by Marquardt's ×10 / ÷10 one rejected step at a time.
LM_DAMPINGS = tuple(10.0 ** k for k in range(-12, 5))
# A Hessian that buys less than this relative decrease of ‖∇L‖ stops the model: with 20 nets of part1_2c, a
# strict decrease kept 17 of them taking steps of a few parts per million for all 50 iterations allowed, and
# brought none more below 1e-4 than this rule did in 7.
LM_MIN_DECREASE = 0.01
LEVENBERG_MARQUARDT_DEFINITION = (
    "minimise ½‖∇L‖² by steps −(H² + μI)⁻¹H∇L (Gauss–Newton on the residual ∇L, whose Jacobian is the full "
    "Hessian H); per iteration one Hessian, μ = δ·max|λ|² for δ = 1e-12, 1e-11, …, 1e4, and the step kept is the "
    "one that lowers ‖∇L‖ most; a model stops (stalled) when that is less than 1 %")


def levenberg_marquardt_steps(hessians: torch.Tensor, gradients: torch.Tensor,
                              dampings: Sequence[float] = LM_DAMPINGS) -> torch.Tensor:
    """−(H² + μI)⁻¹H∇L with μ = δ·max|λ(H)|², per model and per δ: (len(dampings), k, P).

    In H's eigenbasis the system is diagonal, λ/(λ² + μ) per direction, so one
    eigendecomposition serves every damping. Directions the Hessian does not
    see (λ ≈ 0) are barely moved whatever μ: a gradient that lies there cannot
    be removed by this method, or by any that follows ∇‖∇L‖² = 2H∇L.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(hessians)
    coordinates = (eigenvectors.mT @ gradients.unsqueeze(-1)).squeeze(-1)
    scale = eigenvalues.abs().amax(dim=-1, keepdim=True).square()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # H = 0: every step is 0, not 0/0
    damping = torch.tensor(dampings, dtype=hessians.dtype, device=hessians.device).view(-1, 1, 1)
    filtered = eigenvalues / (eigenvalues.square() + damping * scale) * coordinates  # (L, k, P)
    return -(eigenvectors @ filtered.unsqueeze(-1)).squeeze(-1)


@dataclass(frozen=True)
class CriticalPointSearch:
    """Where a search took M models: row k of `loss` and `grad_norm` is measured after k steps.

    Model i has `steps_taken[i] + 1` rows, the last at its final weights
    (`thetas[i]`); rows past a model's own count are NaN. It stopped below the
    threshold (`reached`), because no damping lowered ‖∇L‖ enough (`stalled`),
    or at the step cap (neither).
    """

    thetas: torch.Tensor  # (M, P)
    loss: torch.Tensor  # (rows, M)
    grad_norm: torch.Tensor  # (rows, M)
    steps_taken: torch.Tensor  # (M,) int64
    reached: torch.Tensor  # (M,) bool
    stalled: torch.Tensor  # (M,) bool


def _best_damped_step(field: GradientField, thetas: torch.Tensor, gradients: torch.Tensor,
                      dampings: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per model, the trial point of the ladder with the smallest ‖∇L‖: its θ, loss and gradient."""
    trials = thetas + levenberg_marquardt_steps(field.hessians(thetas), gradients, dampings)
    best_thetas, best_losses, best_gradients = thetas.clone(), thetas.new_full((len(thetas),), math.nan), gradients
    best_norms = thetas.new_full((len(thetas),), math.inf)
    for trial in trials:  # one δ at a time: each pass is as large as the stack, not len(dampings) times larger
        losses, trial_gradients = field.losses_and_gradients(trial)
        norms = trial_gradients.norm(dim=1)
        better = norms < best_norms  # NaN (an overflowing step) is never better
        best_thetas = torch.where(better.unsqueeze(1), trial, best_thetas)
        best_gradients = torch.where(better.unsqueeze(1), trial_gradients, best_gradients)
        best_losses = torch.where(better, losses, best_losses)
        best_norms = torch.where(better, norms, best_norms)
    return best_thetas, best_losses, best_gradients


def levenberg_marquardt(field: GradientField, thetas: torch.Tensor, *, steps: int, stop_below: float,
                        dampings: Sequence[float] = LM_DAMPINGS,
                        min_decrease: float = LM_MIN_DECREASE) -> CriticalPointSearch:
    """Walk each row of `thetas` towards ∇L = 0 by Levenberg–Marquardt steps on ½‖∇L‖², all models together.

    A model stops at the first measurement with ‖∇L‖ < `stop_below`, when its
    best step lowers ‖∇L‖ by less than `min_decrease` (relative), or after
    `steps` steps. Only the models still moving get a Hessian: it is what an
    iteration costs.
    """
    thetas = thetas.detach().clone()
    losses, gradients = field.losses_and_gradients(thetas)
    norms = gradients.norm(dim=1)
    records = thetas.new_full((2, steps + 1, len(thetas)), math.nan)
    records[0, 0], records[1, 0] = losses, norms
    taken = torch.zeros(len(thetas), dtype=torch.int64, device=thetas.device)
    reached, stalled = norms < stop_below, torch.zeros_like(norms, dtype=torch.bool)
    for step in range(1, steps + 1):
        moving = (~(reached | stalled)).nonzero().flatten()
        if not len(moving):
            break
        trial_thetas, trial_losses, trial_gradients = _best_damped_step(field, thetas[moving], gradients[moving],
                                                                        dampings)
        trial_norms = trial_gradients.norm(dim=1)
        accepted = trial_norms < (1 - min_decrease) * norms[moving]
        stalled[moving[~accepted]] = True
        moved = moving[accepted]
        thetas[moved], gradients[moved], norms[moved] = (trial_thetas[accepted], trial_gradients[accepted],
                                                         trial_norms[accepted])
        records[0, step, moved], records[1, step, moved] = trial_losses[accepted], trial_norms[accepted]
        taken[moved] += 1
        reached |= norms < stop_below
    rows = int(taken.max()) + 1 if len(taken) else 1
    return CriticalPointSearch(thetas, records[0, :rows], records[1, :rows], taken, reached, stalled)
