"""Seconds per training update of the part1_2a/2b models with 1 and 2 torch threads.

The machine has 2 cores shared with other jobs; this shows how much intra-op
threading helps (or hurts) these small models there. Threads are alternated
round by round so that both see the same background load.

    python benchmarks/part1_2_threads.py [rounds]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

from hw1track.training.data import load_mnist, subset
from hw1track.training.targets import sample_target
from hw1track.training.models import mlp
from hw1track.training.fit import fit
from hw1track.training.models import seeded_model
from hw1track.training.sinks import NullSink
from hw1track.training.tasks import CLASSIFICATION, REGRESSION


def seconds_per_update(model, train, task, batch_size, updates):
    n = len(train[0])
    epochs = max(1, updates * batch_size // n) if batch_size < n else updates
    started = time.perf_counter()
    fit(model, train, task=task, epochs=epochs, batch_size=batch_size, lr=1e-3, seed=0, eval_splits={},
        sink=NullSink(), log_iterations=True)
    iterations = epochs * -(-n // batch_size)
    return (time.perf_counter() - started) / iterations


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    sinc = sample_target("sinc", 1000)
    mnist = load_mnist()
    digits = subset(mnist.train_x, mnist.train_y, 128 * 100, 0)
    cases = {
        "1-500-1 sinc, full batch of 1000": (lambda: mlp((1, 500, 1)), sinc, REGRESSION, 1000, 500),
        "784-500-50-10 MNIST, batch 128": (lambda: mlp((784, 500, 50, 10)), digits, CLASSIFICATION, 128, 100),
    }
    for name, (factory, train, task, batch_size, updates) in cases.items():
        times = {1: [], 2: []}
        for _ in range(rounds):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                times[threads].append(seconds_per_update(seeded_model(factory, 0), train, task, batch_size, updates))
        one, two = statistics.median(times[1]), statistics.median(times[2])
        print(f"{name}: {1e3 * one:.2f} ms/update with 1 thread, {1e3 * two:.2f} ms with 2 "
              f"(2 threads = {one / two:.2f}x the speed of 1; medians of {rounds} rounds)")


if __name__ == "__main__":
    main()
