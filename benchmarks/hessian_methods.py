"""The exact ways to build a full Hessian that part1_2c's one was chosen among, for the benchmark and the tests.

`hw1track.measures.curvature` builds Hessians one way only (`curvature.HESSIAN_METHOD`,
through `ModelStack.hessians` in the experiment). The alternatives stay here,
next to their only users: benchmarks/part1_2c_batched.py times them all, and
tests/test_curvature.py checks every one against known answers and against the
others, which is what makes any one of them a trustworthy reference.

Each method maps a flat loss and a stack of θ's (M, P) to (M, P, P), the same
matrices up to rounding. `models_at_once` is how many models the vmapped
methods differentiate together (None: all of them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, hessian, jacrev, vmap

from hw1track.measures import curvature
from hw1track.measures.curvature import FlatLoss

# One at a time is the fastest at P = 251 (benchmarks/part1_2c_batched.py): the
# intermediates of P directions times M models outgrow the cache long before the
# per-call overhead matters.
MODELS_AT_ONCE = 1


def forward_over_reverse(flat_loss: FlatLoss, thetas: torch.Tensor, models_at_once: int | None) -> torch.Tensor:
    return vmap(hessian(flat_loss), chunk_size=models_at_once)(thetas)  # hessian = jacfwd(jacrev(f))


def reverse_over_reverse(flat_loss: FlatLoss, thetas: torch.Tensor, models_at_once: int | None) -> torch.Tensor:
    return vmap(jacrev(grad(flat_loss)), chunk_size=models_at_once)(thetas)


def hvp_loop(flat_loss: FlatLoss, thetas: torch.Tensor, models_at_once: int | None) -> torch.Tensor:
    """One Hessian-vector product per basis direction, by plain autograd, one model at a time."""
    basis = torch.eye(thetas.shape[-1], dtype=thetas.dtype, device=thetas.device)
    matrices = []
    for theta in thetas:
        theta = theta.detach().requires_grad_()
        (gradient,) = torch.autograd.grad(flat_loss(theta), theta, create_graph=True)
        rows = [torch.autograd.grad(gradient, theta, direction, retain_graph=True)[0] for direction in basis]
        matrices.append(torch.stack(rows))
    return torch.stack(matrices)


def library(flat_loss: FlatLoss, thetas: torch.Tensor, models_at_once: int | None) -> torch.Tensor:
    """`curvature.full_hessian`: all models' gradients at once, one backward pass per direction."""
    return curvature.full_hessian(flat_loss, thetas)


HESSIAN_METHODS: dict[str, Callable[[FlatLoss, torch.Tensor, int | None], torch.Tensor]] = {
    "forward_over_reverse": forward_over_reverse,
    "reverse_over_reverse": reverse_over_reverse,
    "hvp_loop": hvp_loop,
    curvature.HESSIAN_METHOD: library,  # ignores models_at_once: all of them, always
}


def full_hessian(flat_loss: FlatLoss, thetas: torch.Tensor, method: str,
                 models_at_once: int | None = MODELS_AT_ONCE) -> torch.Tensor:
    """`curvature.full_hessian` by any of `HESSIAN_METHODS`: (P, P) for one θ, (M, P, P) for a stack, symmetrised."""
    if thetas.dtype != torch.float64:
        raise ValueError(f"the Hessian is computed in float64, got θ in {thetas.dtype}")
    matrix = HESSIAN_METHODS[method](flat_loss, thetas.unsqueeze(0) if thetas.dim() == 1 else thetas,
                                     models_at_once)
    matrix = (matrix + matrix.transpose(-1, -2)) / 2
    return matrix[0] if thetas.dim() == 1 else matrix
