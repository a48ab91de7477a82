"""M ReLU nets of one shape as one stack of layers, each net fed its own minibatch.

Trained one at a time, part1_2a's DNN spends more of a step on autograd,
dispatch and the optimiser's Python than on its matrix products. Stacked, a
layer of all M nets is one `baddbmm` forward and two `bmm` backward, and Adam
is one fused call over six tensors, so that overhead is paid once per step
instead of M times (benchmarks/vs_naive.py, W1). Weights are kept transposed,
(M, in, out), so that every product reads its operands as they lie in memory,
and as separate leaves per layer: views into one (M, P) tensor would make
autograd concatenate a gradient of M·P floats every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hw1track.training.models import mlp_layers


class MlpStack:
    """Nets built by `models.mlp`, all of one shape, as stacked per-layer tensors that autograd trains."""

    def __init__(self, models: Sequence[nn.Module]):
        layers = [mlp_layers(model) for model in models]
        shapes = {tuple(layer.weight.shape for layer in net) for net in layers}
        if len(shapes) != 1:
            raise ValueError(f"the nets of a stack must have one shape, got {sorted(shapes)}")
        self.weights = [torch.stack([net[k].weight.detach().t() for net in layers]).contiguous().requires_grad_()
                        for k in range(len(layers[0]))]
        self.biases = [torch.stack([net[k].bias.detach() for net in layers]).unsqueeze(1).contiguous().requires_grad_()
                       for k in range(len(layers[0]))]

    def __len__(self) -> int:
        return len(self.weights[0])

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Net i's output on x[i]: x is (M, batch, *input shape), the result (M, batch, outputs)."""
        h = x.flatten(2)
        for depth, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(bias, h, weight)
            if depth < len(self.weights) - 1:
                h = h.relu()
        return h

    @torch.no_grad()
    def copy_to(self, models: Sequence[nn.Module]) -> None:
        """Write the stack's current weights into the nets it was built from (for evaluation and saving)."""
        for index, model in enumerate(models):
            for layer, weight, bias in zip(mlp_layers(model), self.weights, self.biases):
                layer.weight.copy_(weight[index].t())
                layer.bias.copy_(bias[index, 0])
