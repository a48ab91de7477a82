"""A model's parameters as one flat vector θ ∈ R^P, and θ back as the model's parameters.

Curvature, sharpness and the model stacks all need the loss as a function of
one vector: the Hessian must be the full P×P matrix with every cross-layer
block, L-BFGS-B optimises over one array, and a stack's optimiser steps one
(M, P) leaf. They must also agree on what coordinate i of θ is, or a Hessian
and the weights it was computed at describe different points. θ holds every
parameter, frozen or not, in `named_parameters` order (the order of the
parameters in a state_dict), each flattened row-major.
"""

from __future__ import annotations

import torch
from torch import nn


class ParamLayout:
    """Where each parameter of one architecture lies in θ: its name, shape and number of entries, in order."""

    def __init__(self, module: nn.Module):
        """The layout of `module`'s parameters; the module may live on the meta device."""
        named = list(module.named_parameters())
        self.names = tuple(name for name, _ in named)
        self.shapes = tuple(p.shape for _, p in named)
        self.sizes = tuple(shape.numel() for shape in self.shapes)

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """θ of `module`, a new detached (P,) tensor in the parameters' dtype and device.

        ValueError if `module` is not of this layout: values in the wrong slots
        would go unnoticed whenever P happens to match.
        """
        named = list(module.named_parameters())
        if [(name, p.shape) for name, p in named] != list(zip(self.names, self.shapes)):
            raise ValueError("the module's parameters do not have this layout: "
                             f"{[(name, tuple(p.shape)) for name, p in named]}")
        return torch.cat([p.detach().flatten() for _, p in named])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: parameter} as views into `theta`, (*batch, P) → (*batch, *shape) each.

        Views, not copies: an update of θ is an update of every parameter, and
        autograd sees the parameters as functions of θ.
        """
        batch = theta.shape[:-1]
        pieces = theta.split(self.sizes, dim=-1)
        return {name: piece.view(*batch, *shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}
