"""Sensitivity of a classifier to its input: how far its predicted probabilities move per unit of input.

What is measured: for each example x, the Frobenius norm of the Jacobian of
softmax(f(x)) with respect to x, averaged over a set of examples. Taking the
Jacobian of each example on its own (not of a batch's summed output) is what
makes the number independent of how the examples are chunked for evaluation.

How it is computed: `torch.func.jacrev` gives one example's Jacobian
(10 reverse passes, one per class), `torch.func.vmap` runs it over a chunk of
examples at once. The model only needs to be a function of one example; it is
called on a batch of one, so it may contain batch-shaped layers. It runs in
eval mode, as for every reported number: dropout would make the Jacobian
random (and vmap refuses random operations), batch norm would normalise each
example by its own statistics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from hw1track.training.evaluation import eval_mode

DEFINITION = "mean over the examples of ||d softmax(f(x)) / dx||_F, one Jacobian per example"
CHUNK = 512  # examples per vmap call: their Jacobians (chunk x classes x input size) stay well under 100 MB


def input_jacobian_norms(model: nn.Module, x: torch.Tensor, chunk_size: int = CHUNK) -> torch.Tensor:
    """||d softmax(f(x_i)) / dx_i||_F for every example x_i of `x`, as a float64 vector; `model` keeps its mode."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def probabilities(example: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**params, **buffers}, (example.unsqueeze(0),))
        return torch.softmax(logits.squeeze(0), dim=-1)

    per_example_jacobian = vmap(jacrev(probabilities))
    norms = []
    with eval_mode(model):
        for start in range(0, len(x), chunk_size):
            jacobians = per_example_jacobian(x[start:start + chunk_size])
            norms.append(jacobians.flatten(start_dim=1).double().norm(dim=1))
    return torch.cat(norms)


def sensitivity(model: nn.Module, x: torch.Tensor, chunk_size: int = CHUNK) -> float:
    """The mean per-example input-Jacobian norm of the softmax output (see DEFINITION)."""
    return input_jacobian_norms(model, x, chunk_size).mean().item()
