"""Seconds per full-MNIST epoch of the part1_3a MLP and the part1_3b CNNs, and what the full presets cost.

The full presets take tens of minutes, too long to time end to end on a 2-core
machine shared with other jobs. This times short stretches of the real work
instead (training steps of the preset's batch size, and the no-grad evaluation
of train and test sets done after every epoch) with 1 and 2 intra-op threads,
alternated round by round so that both see the same background load, and
scales them to one epoch. The minimum over rounds estimates a quiet machine,
the median the load at the time.

    .venv/bin/python benchmarks/part1_3_epoch_time.py [rounds]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from hw1track.training.data import load_mnist
from hw1track.training.models import cnn, mlp
from hw1track.training.evaluation import evaluate
from hw1track.training.models import seeded_model
from hw1track.training.tasks import CLASSIFICATION
from runs import part1_3a, part1_3b

STEPS = 30  # training steps per timing
N_TRAIN, N_TEST = 60_000, 10_000
EVAL_EXAMPLES = 8192


def seconds_per_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """STEPS Adam updates and one evaluation chunk, scaled to an epoch of updates plus the train+test evaluation."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    started = time.perf_counter()
    for step in range(STEPS):
        index = torch.randint(0, len(x), (batch_size,))
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    per_step = (time.perf_counter() - started) / STEPS
    started = time.perf_counter()
    evaluate(model, (x[:EVAL_EXAMPLES], y[:EVAL_EXAMPLES]), CLASSIFICATION)
    per_example = (time.perf_counter() - started) / EVAL_EXAMPLES
    return per_step * -(-N_TRAIN // batch_size) + per_example * (N_TRAIN + N_TEST)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {rounds} rounds of {STEPS} steps")
    mnist = load_mnist()
    x, y = mnist.train_x, mnist.train_y
    full_3a, full_3b = part1_3a.PRESETS["full"], part1_3b.PRESETS["full"]
    models = {"part1_3a " + "-".join(map(str, full_3a.widths)): (lambda: mlp(full_3a.widths), full_3a.batch_size)}
    for width in full_3b.widths:
        models[f"part1_3b dense{width}"] = (lambda width=width: cnn(full_3b.channels, (width,)), full_3b.batch_size)

    timings: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for name, (factory, batch_size) in models.items():
            for threads in (1, 2):
                torch.set_num_threads(threads)
                model = seeded_model(factory, 0)
                timings.setdefault((name, threads), []).append(seconds_per_epoch(model, x, y, batch_size))

    print(f"{'model':<32} {'threads':>7} {'min s/epoch':>12} {'median s/epoch':>15}")
    best = {}
    for (name, threads), values in timings.items():
        print(f"{name:<32} {threads:>7} {min(values):>12.1f} {statistics.median(values):>15.1f}")
        best[name] = min(best.get(name, float("inf")), min(values))
    mlp_epoch = next(v for k, v in best.items() if k.startswith("part1_3a"))
    sweep_epoch = sum(v for k, v in best.items() if k.startswith("part1_3b"))
    print(f"part1_3a full: {mlp_epoch:.0f} s per epoch per model; the random-label model alone for "
          f"{full_3a.max_epochs} epochs (cap): {mlp_epoch * full_3a.max_epochs / 60:.0f} min")
    print(f"part1_3b full: {sweep_epoch:.0f} s per epoch of all {len(full_3b.widths)} models; "
          f"{full_3b.epochs} epochs: {sweep_epoch * full_3b.epochs / 60:.1f} min")


if __name__ == "__main__":
    main()
