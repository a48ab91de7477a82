"""How much MLflow tracking costs: the same training with a real SQLite store vs no tracking.

Two workloads: per-epoch metrics of a full-batch function fit (part1_1a's deep
net) and per-iteration loss and gradient norm of minibatch training
(part1_2b-style). Prints wall times and the overhead in percent.

    python benchmarks/tracking_overhead.py [--epochs 3000] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hw1track.training.targets import sample_target
from hw1track.training.models import mlp
from hw1track.tracking.runs import parent_run
from hw1track.tracking.store import Store
from hw1track.training.fit import fit
from hw1track.training.models import seeded_model
from hw1track.training.sinks import NullSink
from hw1track.training.tasks import REGRESSION


def _train(sink, epochs: int, batch_size: int, log_iterations: bool) -> None:
    x, y = sample_target("sinc", 1000)
    model = seeded_model(lambda: mlp((1, 5, 10, 10, 10, 10, 10, 5, 1)), seed=0)
    fit(model, (x, y), task=REGRESSION, epochs=epochs, batch_size=batch_size, lr=1e-3, seed=0,
        eval_splits={"train": (x, y)}, sink=sink, log_iterations=log_iterations)


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(epochs: int, batch_size: int, log_iterations: bool, repeats: int) -> tuple[float, float, int]:
    plain, tracked = [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        for _ in range(repeats):
            plain.append(_timed(lambda: _train(NullSink(), epochs, batch_size, log_iterations)))
            with parent_run(store, "benchmark", "bench", "overhead", {}) as parent:
                with parent.child("model", {"epochs": epochs}) as child:
                    tracked.append(_timed(lambda: (_train(child, epochs, batch_size, log_iterations), child.flush())))
    per_epoch = 1 + (2 * ((1000 + batch_size - 1) // batch_size) if log_iterations else 0)
    return statistics.median(plain), statistics.median(tracked), per_epoch * epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'workload':<44} {'no tracking':>12} {'MLflow':>10} {'overhead':>9} {'values':>8}")
    for label, batch_size, per_iteration in (
        (f"per-epoch train_loss, full batch, {args.epochs} ep", 1000, False),
        (f"per-iteration loss+grad_norm, batch 100, {args.epochs // 10} ep", 100, True),
    ):
        epochs = args.epochs if not per_iteration else args.epochs // 10
        plain, tracked, values = measure(epochs, batch_size, per_iteration, args.repeats)
        print(f"{label:<44} {plain:>11.2f}s {tracked:>9.2f}s {100 * (tracked - plain) / plain:>8.1f}% {values:>8}")


if __name__ == "__main__":
    main()
