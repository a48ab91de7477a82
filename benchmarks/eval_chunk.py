"""Seconds for one no-grad evaluation of the 60,000 training images by chunk size (hw1track.training.fit.EVAL_CHUNK).

Every epoch of every MNIST experiment ends with this evaluation of the train
and test sets. A chunk of 8192 images gives a conv layer an 8192x8x28x28
activation (200 MB), far beyond the caches; smaller chunks keep it in cache.
Sizes are alternated round by round so that each sees the same background load.

    .venv/bin/python benchmarks/eval_chunk.py [rounds]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

import hw1track.training.fit as training
from hw1track.training.data import load_mnist
from hw1track.training.models import cnn, mlp
from hw1track.training.evaluation import evaluate
from hw1track.training.models import seeded_model
from hw1track.training.tasks import CLASSIFICATION

CHUNKS = (8192, 4096, 2048, 1024, 512, 256)
MODELS = {
    "part1_1b cnn3 (8-16-32, 65)": lambda: cnn((8, 16, 32), (65,)),
    "part1_3b cnn (8, 6)": lambda: cnn((8,), (6,)),
    "part1_3b cnn (8, 1000)": lambda: cnn((8,), (1000,)),
    "part1_3a mlp 784-1024-1024-10": lambda: mlp((784, 1024, 1024, 10)),
    "part1_2a mlp 784-500-50-10": lambda: mlp((784, 500, 50, 10)),
}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"median of {rounds} rounds")
    mnist = load_mnist()
    split = (mnist.train_x, mnist.train_y)
    default = training.EVAL_CHUNK
    print(f"{'model':<32}" + "".join(f"{chunk:>8}" for chunk in CHUNKS))
    try:
        for name, factory in MODELS.items():
            model = seeded_model(factory, 0)
            seconds: dict[int, list[float]] = {chunk: [] for chunk in CHUNKS}
            for _ in range(rounds):
                for chunk in CHUNKS:
                    training.EVAL_CHUNK = chunk
                    started = time.perf_counter()
                    evaluate(model, split, CLASSIFICATION)
                    seconds[chunk].append(time.perf_counter() - started)
            print(f"{name:<32}" + "".join(f"{statistics.median(seconds[chunk]):>8.2f}" for chunk in CHUNKS))
    finally:
        training.EVAL_CHUNK = default


if __name__ == "__main__":
    main()
