"""The two model families of HW1: fully connected nets and small CNNs, named by their widths."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

# The homework's MNIST DNN (P = 418,060): part1_2a traces its optimisation path,
# part1_2b its gradient norm, so they must train the same net.
MNIST_DNN_WIDTHS = (784, 500, 50, 10)


def seeded_model(factory: Callable[[], nn.Module], seed: int, device: str | torch.device = "cpu") -> nn.Module:
    """Build a model whose initial weights depend only on `seed`."""
    torch.manual_seed(seed)
    return factory().to(device)


def n_params(model: nn.Module) -> int:
    """P: every trainable parameter, biases included."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _dense_layers(widths: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return layers


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """ReLU network through `widths`, input and output included: mlp((1, 190, 1)) is 1-190-1."""
    return nn.Sequential(nn.Flatten(), *_dense_layers(widths))


def mlp_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of a net built by `mlp`, in order; ValueError for any other architecture.

    The stacks that write an MLP's passes out (`batched.DenseReluStack`,
    `mlp_stack.MlpStack`) check their nets with it: they assume exactly this
    structure, a bias in every layer included.
    """
    layers = list(model) if isinstance(model, nn.Sequential) else []
    linear = [layer for layer in layers if isinstance(layer, nn.Linear)]
    expected = [nn.Flatten] + [nn.Linear, nn.ReLU] * (len(linear) - 1) + [nn.Linear]
    if not linear or [type(layer) for layer in layers] != expected or any(layer.bias is None for layer in linear):
        raise ValueError("expected a net built by hw1track.training.models.mlp (Flatten, then Linear layers with biases "
                         "and ReLUs)")
    return linear


def cnn(channels: Sequence[int], dense: Sequence[int], n_classes: int = 10, side: int = 28,
        kernel: int = 3) -> nn.Sequential:
    """Conv(k, same padding)-ReLU-MaxPool(2) blocks with `channels`, then an MLP with `dense` hidden widths.

    Each block halves the image side, so depth trades spatial size for channels
    while the dense head absorbs the difference in P.

    A block pools before its ReLU. The two orders compute the same numbers,
    gradients included (max and ReLU are both monotone selections, so
    max(relu(a), relu(b)) = relu(max(a, b)) bit for bit), but the ReLU then
    touches a quarter of the activations: a conv layer's ReLU was a third of an
    evaluation's time, and the swap makes a part1_3b epoch's evaluation about
    2x faster (benchmarks/cnn_block_order.py).
    """
    layers: list[nn.Module] = []
    fan_in = 1
    for width in channels:
        layers += [nn.Conv2d(fan_in, width, kernel, padding=kernel // 2), nn.MaxPool2d(2), nn.ReLU()]
        fan_in = width
        side //= 2
    layers.append(nn.Flatten())
    layers += _dense_layers((fan_in * side * side, *dense, n_classes))
    return nn.Sequential(*layers)


def describe(widths: Sequence[int]) -> str:
    """'1-190-1' for the widths (1, 190, 1)."""
    return "-".join(map(str, widths))
