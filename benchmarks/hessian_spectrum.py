"""What the Hessian spectrum measures cost on a part1_3c_ii model: λ_max, trace and density from H·v products.

The model is part1_3c_ii's MLP (784-128-64-10, 109,386 parameters) trained for one epoch on 6,000 MNIST images,
measured on its 2,000-example sharpness subset, as part1_3c_ii would. Printed: the time of the operator's
set-up (one gradient whose graph every product reuses), of one product alone and in a block of 10, and of
each measure at its default settings with its number of products.

    python benchmarks/hessian_spectrum.py [rounds]

Other jobs share the 2 cores: each time is the fastest of `rounds`, and the load average is printed.
"""

from __future__ import annotations

import os
import sys
import time

import torch
import torch.nn.functional as F

from hw1track.measures.hessian_spectrum import HessianOperator, hutchinson_trace, spectral_density, top_eigenvalue
from hw1track.training.data import load_mnist, subset
from hw1track.training.fit import fit
from hw1track.training.models import mlp, seeded_model
from hw1track.training.sinks import NullSink
from hw1track.training.tasks import CLASSIFICATION
from runs.part1_3c_ii import MODEL


def fastest(work, rounds: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(rounds: int = 3) -> None:
    mnist = load_mnist()
    train = subset(mnist.train_x, mnist.train_y, 6_000, seed=0)
    model = seeded_model(lambda: mlp(MODEL), seed=0)
    fit(model, train, task=CLASSIFICATION, epochs=1, batch_size=64, lr=1e-3, seed=0, eval_splits={}, sink=NullSink())
    x, y = subset(*train, 2_000, seed=0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; "
          f"P = {sum(p.numel() for p in model.parameters()):,}, {len(x):,} examples; fastest of {rounds}")
    seconds, operator = fastest(lambda: HessianOperator.of_model(model, F.cross_entropy, x, y), rounds)
    print(f"set-up (one gradient, graph kept)      {seconds:7.2f} s")
    vector = torch.randn(operator.dim, generator=torch.Generator().manual_seed(0))
    seconds, _ = fastest(lambda: operator(vector), rounds)
    print(f"one H·v                                {seconds:7.3f} s")
    block = torch.randn(10, operator.dim, generator=torch.Generator().manual_seed(0))
    seconds, _ = fastest(lambda: operator(block), rounds)
    print(f"10 H·v in one block                    {seconds:7.3f} s ({seconds / 10:.3f} s each)")
    for name, measure in (("λ_max, Lanczos 30 steps", lambda: top_eigenvalue(operator, steps=30)),
                          ("trace, Hutchinson 100 probes", lambda: hutchinson_trace(operator, probes=100)),
                          ("density, SLQ 4 probes × 80 steps", lambda: spectral_density(operator))):
        seconds, result = fastest(measure, rounds)
        value = f"{result.value:.4g}" if hasattr(result, "value") else f"mean λ {result.moment(1):.3g}"
        print(f"{name:<38} {seconds:7.2f} s, {result.products} products, {value}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
