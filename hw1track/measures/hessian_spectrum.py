"""Hessian spectra of any model from Hessian-vector products alone: λ_max, trace and eigenvalue density.

A full Hessian is P×P: part1_2c's 251-parameter nets can afford it, a
part1_3c_ii MLP (109,386 parameters) cannot. What the field measures instead
(PyHessian, Yao et al. 2020; Ghorbani, Krishnan & Xiao 2019) needs only
products H·v, so the operator is kept apart from the algorithms that use it:

- `HessianOperator`: v ↦ H(θ)·v of a loss over fixed data, never the matrix.
  The gradient's graph is built once (`torch.func.vjp` of `torch.func.grad`)
  and every product is one backward pass through it; a block of vectors goes
  through `vmap`, about twice as fast per vector as one at a time. (Forward
  over reverse, `jvp` of `grad`, rebuilds the graph at every product, and
  fails on `F.mse_loss` in torch 2.14.)
- `top_eigenvalue`: the largest Ritz value of a Lanczos run, with its residual
  bound; Lanczos converges to the extreme eigenvalues in far fewer products
  than power iteration.
- `hutchinson_trace`: tr H = E[vᵀHv] over Rademacher probes v, with the
  standard error of the mean.
- `spectral_density`: stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017).
  m Lanczos steps from a unit probe v give a tridiagonal T; its eigenvalues
  are quadrature nodes and the SQUARED FIRST COMPONENTS of its eigenvectors
  the weights, so that Σ w_k λ_k^j = vᵀH^j v exactly for j < 2m. (PyHessian
  squared whole eigenvectors until its fix of January 2024, PR #23.)

Each result carries `products`, the number of H·v it took: the cost of a
measure is one gradient's pass over its data plus that many backward passes.
Lanczos runs from several probes advance together, one block product a step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import grad, vjp, vmap

from hw1track.measures.curvature import FlatLoss, flatten_params, loss_of_flat_params
from hw1track.training.evaluation import eval_mode

BREAKDOWN = 1e-10  # a Lanczos β below this × ‖T‖ means the probe's Krylov space is exhausted


class HessianOperator:
    """H(θ)·v for the loss `flat_loss` at θ; counts the products it makes (its cost)."""

    def __init__(self, flat_loss: FlatLoss, theta: torch.Tensor):
        self.theta = theta.detach()
        _, self._pullback = vjp(grad(flat_loss), self.theta)
        self.products = 0

    @classmethod
    def of_model(cls, model: nn.Module, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                 y: torch.Tensor) -> HessianOperator:
        """The Hessian of `loss` over (x, y) at `model`'s weights, in eval mode, over all its parameters.

        The forward pass happens here, once: the model is back in its own mode afterwards."""
        with eval_mode(model):
            return cls(loss_of_flat_params(model, loss, x, y), flatten_params(model))

    @property
    def dim(self) -> int:
        return self.theta.numel()

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        """H·v for one vector (P,) or for each row of a block (k, P)."""
        if vectors.dim() == 1:
            return self(vectors.unsqueeze(0))[0]
        self.products += len(vectors)
        return vmap(self._pullback)(vectors)[0]


@dataclass(frozen=True)
class Tridiagonal:
    """What m Lanczos steps from one probe leave: T's diagonal (m,) and off-diagonal (m - 1,), in float64,
    and the norm of the residual the last step left (zero when the Krylov space was exhausted)."""

    alphas: torch.Tensor
    betas: torch.Tensor
    residual: float

    def matrix(self) -> torch.Tensor:
        return torch.diag(self.alphas) + torch.diag(self.betas, 1) + torch.diag(self.betas, -1)

    def quadrature(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gauss quadrature nodes (T's eigenvalues, ascending) and weights (first eigenvector components²)."""
        nodes, vectors = torch.linalg.eigh(self.matrix())
        return nodes, vectors[0] ** 2


def lanczos(operator: Callable[[torch.Tensor], torch.Tensor], probes: torch.Tensor, steps: int) -> list[Tridiagonal]:
    """`steps` Lanczos iterations from each row of `probes` (k, P) at once, with full re-orthogonalisation.

    Each new vector is orthogonalised against its probe's whole basis, twice
    (classical Gram-Schmidt twice is as good as modified): `steps` vectors of
    memory per probe, but no spurious copies of converged Ritz values, which
    plain three-term Lanczos produces in floating point. A probe whose Krylov
    space is exhausted stops there (its T then holds its part of the spectrum
    exactly) while the others go on.
    """
    basis = probes.new_zeros(len(probes), steps, probes.shape[1])  # (k, m, P), filled step by step
    basis[:, 0] = probes / probes.norm(dim=1, keepdim=True)
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    lengths = torch.full((len(probes),), steps)
    for step in range(steps):
        current, spanned = basis[:, step], basis[:, :step + 1]
        w = operator(current)
        alphas.append((w * current).sum(dim=1).double())
        # bmm, not einsum, which copied the basis: SLQ 8.0 s -> 5.1 s (benchmarks/hessian_spectrum.py)
        for _ in range(2):
            coefficients = torch.bmm(spanned, w.unsqueeze(2))  # (k, step + 1, 1)
            w = w - torch.bmm(coefficients.transpose(1, 2), spanned).squeeze(1)
        beta = w.norm(dim=1)
        betas.append(beta.double())
        if step == steps - 1:
            break
        scale = torch.stack(alphas).abs().amax(dim=0) + torch.stack(betas).amax(dim=0)
        exhausted = (beta.double() <= BREAKDOWN * scale) & (lengths == steps)
        lengths[exhausted] = step + 1
        alive = (lengths == steps).to(w.dtype).unsqueeze(1)
        basis[:, step + 1] = alive * w / torch.where(beta > 0, beta, torch.ones_like(beta)).unsqueeze(1)
    alpha_table, beta_table = torch.stack(alphas, dim=1), torch.stack(betas, dim=1)
    return [Tridiagonal(alpha_table[i, :n], beta_table[i, :n - 1], beta_table[i, n - 1].item() if n == steps else 0.0)
            for i, n in enumerate(lengths.tolist())]


@dataclass(frozen=True)
class TopEigenvalue:
    """λ_max estimate; `residual` bounds its distance to an eigenvalue of H (‖H·y − λ·y‖ of the Ritz pair)."""

    value: float
    residual: float
    products: int


def top_eigenvalue(operator: HessianOperator, *, steps: int = 30,
                   generator: torch.Generator | None = None) -> TopEigenvalue:
    """The algebraically largest eigenvalue (λ_max as sharpness uses it), by Lanczos from a Gaussian probe."""
    before = operator.products
    (tridiagonal,) = lanczos(operator, _gaussian(operator.theta, 1, generator), steps)
    nodes, vectors = torch.linalg.eigh(tridiagonal.matrix())
    bound = abs(vectors[-1, -1].item()) * tridiagonal.residual  # |β_m · last component of the Ritz vector|
    return TopEigenvalue(nodes[-1].item(), bound, operator.products - before)


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's tr H: the mean of vᵀHv over probes and its standard error."""

    value: float
    standard_error: float
    products: int


def hutchinson_trace(operator: HessianOperator, *, probes: int = 100, block: int = 10,
                     generator: torch.Generator | None = None) -> TraceEstimate:
    """tr H from Rademacher probes (the lowest-variance i.i.d. probes for a fixed H), `block` at a time."""
    before = operator.products
    samples = []
    for start in range(0, probes, block):
        v = _rademacher(operator.theta, min(block, probes - start), generator)
        samples.append((v * operator(v)).sum(dim=1).double())
    values = torch.cat(samples)
    error = values.std().item() / math.sqrt(probes) if probes > 1 else math.nan
    return TraceEstimate(values.mean().item(), error, operator.products - before)


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature: per probe, nodes (probes, m) and weights summing to 1 per probe.

    The density of H's eigenvalues is their average over probes, Σ_k w_k δ(λ − λ_k) / probes;
    `smoothed` turns it into a curve, `moment(j)` estimates tr(H^j)/P.
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    products: int

    def moment(self, power: int) -> float:
        return self.per_probe_moment(power).mean().item()

    def per_probe_moment(self, power: int) -> torch.Tensor:
        """Each probe's vᵀH^j v: their spread over probes is the estimate's sampling error."""
        return (self.weights * self.nodes ** power).sum(dim=1)

    def smoothed(self, grid: torch.Tensor, width: float) -> torch.Tensor:
        """The density on `grid` with each node spread by a Gaussian of standard deviation `width`; ∫ = 1."""
        gaps = grid.double().reshape(-1, 1, 1) - self.nodes.unsqueeze(0)
        kernels = torch.exp(-0.5 * (gaps / width) ** 2) / (width * math.sqrt(2 * math.pi))
        return (kernels * self.weights.unsqueeze(0)).sum(dim=2).mean(dim=1)


def spectral_density(operator: HessianOperator, *, probes: int = 4, steps: int = 80,
                     generator: torch.Generator | None = None) -> SpectralDensity:
    """SLQ over `probes` Gaussian probes of `steps` Lanczos steps each, run together. A probe whose run
    stopped early is padded with zero-weight nodes, so that every probe has `steps` columns."""
    before = operator.products
    nodes, weights = [], []
    for tridiagonal in lanczos(operator, _gaussian(operator.theta, probes, generator), steps):
        probe_nodes, probe_weights = tridiagonal.quadrature()
        padding = steps - len(probe_nodes)
        nodes.append(torch.cat([probe_nodes, probe_nodes[-1:].expand(padding)]))
        weights.append(torch.cat([probe_weights, probe_weights.new_zeros(padding)]))
    return SpectralDensity(torch.stack(nodes).cpu(), torch.stack(weights).cpu(), operator.products - before)


def _gaussian(like: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn((count, like.numel()), generator=generator, dtype=like.dtype).to(like.device)


def _rademacher(like: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    signs = torch.randint(0, 2, (count, like.numel()), generator=generator, dtype=torch.int8)
    return (signs.to(like.dtype) * 2 - 1).to(like.device)
