"""Per-example input-Jacobian norms: torch.func (vmap of jacrev, the library's method) against one
batched reverse pass per class.

The batched variant differentiates the batch's summed probability of class k
with respect to the whole batch; that equals each example's own Jacobian row
only because no layer mixes examples (no batch norm), which is why the library
does not rely on it. This script prints how much speed that assumption buys.

    .venv/bin/python benchmarks/sensitivity_jacobian.py
"""

from __future__ import annotations

import time

import torch

from hw1track.training.models import cnn, mlp
from hw1track.measures.sensitivity import input_jacobian_norms
from hw1track.training.models import seeded_model

N_EXAMPLES = 2000


def batched_backward_norms(model: torch.nn.Module, x: torch.Tensor, chunk_size: int = 512) -> torch.Tensor:
    norms = []
    for start in range(0, len(x), chunk_size):
        xb = x[start:start + chunk_size].clone().requires_grad_(True)
        probabilities = torch.softmax(model(xb), dim=-1)
        rows = [torch.autograd.grad(probabilities[:, k].sum(), xb, retain_graph=True)[0].flatten(1)
                for k in range(probabilities.shape[1])]
        norms.append(torch.stack(rows, dim=1).flatten(1).double().norm(dim=1))
    return torch.cat(norms)


def seconds(method, model, x) -> tuple[float, torch.Tensor]:
    method(model, x[:64])  # warm-up
    start = time.perf_counter()
    values = method(model, x)
    return time.perf_counter() - start, values


def main() -> None:
    x = torch.randn(N_EXAMPLES, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    models = {"MLP 784-128-64-10": lambda: mlp((784, 128, 64, 10)), "CNN (8,16)+30": lambda: cnn((8, 16), (30,))}
    print(f"{N_EXAMPLES} examples, {torch.get_num_threads()} threads")
    for name, factory in models.items():
        model = seeded_model(factory, 0)
        vmap_time, vmap_values = seconds(input_jacobian_norms, model, x)
        batched_time, batched_values = seconds(batched_backward_norms, model, x)
        gap = ((vmap_values - batched_values).abs() / vmap_values).max().item()
        print(f"{name}: vmap(jacrev) {vmap_time:.2f}s, batched backward {batched_time:.2f}s "
              f"(x{vmap_time / batched_time:.1f}), max relative difference {gap:.1e}")


if __name__ == "__main__":
    main()
