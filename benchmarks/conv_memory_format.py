"""Seconds per training epoch and per full-set evaluation of the MNIST CNNs, NCHW vs channels-last.

oneDNN has separate convolution and pooling kernels for the two layouts, and on
this CPU the NHWC ones are faster for these thin (8 to 32 channel) layers. An
MNIST image has one channel, so its layout is the same in both: only the
weights (and hence every activation after the first convolution) change
layout. `hw1track.training.fit.fit` therefore trains conv models channels-last.
Layouts are alternated round by round so that both see the same background load.

    .venv/bin/python benchmarks/conv_memory_format.py [rounds]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from hw1track.training.data import load_mnist
from hw1track.training.models import cnn
from hw1track.training.evaluation import evaluate
from hw1track.training.models import seeded_model
from hw1track.training.tasks import CLASSIFICATION

BATCH = 128
TRAIN_STEPS = 100
MODELS = {
    "part1_1b cnn3 (8-16-32, 65)": lambda: cnn((8, 16, 32), (65,)),
    "part1_3b cnn (8, 1000)": lambda: cnn((8,), (1000,)),
    "part1_3b cnn (8, 6)": lambda: cnn((8,), (6,)),
}
LAYOUTS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}


def train_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds per epoch of 60,000 images, from TRAIN_STEPS steps of fit's own update (fused Adam).

    The step is written out rather than calling `fit`, because `fit` now switches every conv model
    to channels-last: through it, the NCHW side could not be measured.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    for step in range(TRAIN_STEPS):
        index = order[step * BATCH:(step + 1) * BATCH]
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / TRAIN_STEPS * len(x) / BATCH


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"median of {rounds} rounds; seconds per 60,000 images")
    mnist = load_mnist()
    x, y = mnist.train_x, mnist.train_y
    print(f"{'model':<30}{'layout':>15}{'train epoch':>13}{'evaluation':>12}")
    for name, factory in MODELS.items():
        seconds: dict[str, dict[str, list[float]]] = {layout: {"train": [], "eval": []} for layout in LAYOUTS}
        for _ in range(rounds):
            for layout, memory_format in LAYOUTS.items():
                model = seeded_model(factory, 0).to(memory_format=memory_format)
                seconds[layout]["train"].append(train_seconds(model, x, y))
                started = time.perf_counter()
                evaluate(model, (x, y), CLASSIFICATION)
                seconds[layout]["eval"].append(time.perf_counter() - started)
        for layout in LAYOUTS:
            train, evaluation = (statistics.median(seconds[layout][key]) for key in ("train", "eval"))
            print(f"{name:<30}{layout:>15}{train:>13.2f}{evaluation:>12.2f}")


if __name__ == "__main__":
    main()
