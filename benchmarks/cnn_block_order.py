"""Seconds per training epoch and per full-set evaluation of the MNIST CNNs, ReLU-then-pool vs pool-then-ReLU.

`hw1track.training.models.cnn` pools before its ReLU: the orders compute the
same numbers (checked here on every model, outputs and gradients), and the ReLU
then runs on a quarter of the conv layer's activations, which in an evaluation
was a third of the time. Orders are alternated round by round so that both see
the same background load.

    .venv/bin/python benchmarks/cnn_block_order.py [rounds]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
from conv_memory_format import train_seconds  # the same training steps, timed the same way
from torch import nn

from hw1track.training.data import load_mnist
from hw1track.training.evaluation import evaluate
from hw1track.training.models import cnn, seeded_model
from hw1track.training.tasks import CLASSIFICATION

MODELS = {
    "part1_1b cnn3 (8-16-32, 65)": lambda: cnn((8, 16, 32), (65,)),
    "part1_3b cnn (8, 1000)": lambda: cnn((8,), (1000,)),
    "part1_3b cnn (8, 128)": lambda: cnn((8,), (128,)),
    "part1_3b cnn (8, 6)": lambda: cnn((8,), (6,)),
}


def relu_then_pool(model: nn.Sequential) -> nn.Sequential:
    """The same model (same parameter objects) with every MaxPool2d-ReLU pair put back in the textbook order."""
    layers = list(model)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return nn.Sequential(*layers)


ORDERS = {"relu, pool": relu_then_pool, "pool, relu (used)": lambda model: model}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"median of {rounds} rounds; seconds per 60,000 images, channels-last as fit trains them")
    mnist = load_mnist()
    x, y = mnist.train_x, mnist.train_y
    print(f"{'model':<30}{'order':>20}{'train epoch':>13}{'evaluation':>12}")
    for name, factory in MODELS.items():
        seconds: dict[str, dict[str, list[float]]] = {order: {"train": [], "eval": []} for order in ORDERS}
        for _ in range(rounds):
            results = {}
            for order, arrange in ORDERS.items():
                model = arrange(seeded_model(factory, 0)).to(memory_format=torch.channels_last)
                train = train_seconds(model, x, y)
                started = time.perf_counter()
                results[order] = (evaluate(model, (x, y), CLASSIFICATION),
                                  [parameter.detach().clone() for parameter in model.parameters()])
                seconds[order]["eval"].append(time.perf_counter() - started)
                seconds[order]["train"].append(train)
            (metrics, weights), (other_metrics, other_weights) = results.values()
            if metrics != other_metrics or not all(map(torch.equal, weights, other_weights)):
                raise SystemExit(f"{name}: the two orders disagree: {metrics} against {other_metrics}")
        for order in ORDERS:
            train, evaluation = (statistics.median(seconds[order][key]) for key in ("train", "eval"))
            print(f"{name:<30}{order:>20}{train:>13.2f}{evaluation:>12.2f}")
    print("both orders gave the same trained weights and the same full-set metrics, bit for bit")


if __name__ == "__main__":
    main()
