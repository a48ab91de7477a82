"""Seconds per epoch of part1_2a's eight stacked DNNs, with denormal floats flushed to zero and without.

Each epoch is `train_together`'s own step over part1_2a's full config, without
the per-epoch evaluation (which denormals do not slow). The flush mode belongs to each thread and is inherited by threads started
later, so each variant runs in a fresh interpreter that sets it (or not)
before torch starts its thread pool, as the command line does. Also prints the
share of Adam's moments that are denormal after the last epoch.

    .venv/bin/python benchmarks/denormals.py [epochs]
"""

from __future__ import annotations

import subprocess
import sys
import time

import torch


def train(epochs: int) -> None:
    from hw1track.training.data import load_mnist
    from hw1track.training.mlp_stack import MlpStack
    from hw1track.training.models import mlp
    from hw1track.training.models import seeded_model
    from hw1track.training.tasks import CLASSIFICATION
    from hw1track.training.mlp_stack import stacked_step
    from runs import part1_2a

    cfg = part1_2a.PRESETS["full"]
    mnist = load_mnist()
    x, y = mnist.train_x, mnist.train_y
    models = [seeded_model(lambda: mlp(part1_2a.WIDTHS), cfg.seed + i) for i in range(cfg.trainings)]
    stack = MlpStack(models)
    optimizer = torch.optim.Adam(stack.parameters(), lr=cfg.lr, fused=True)
    shuffles = [torch.Generator().manual_seed(cfg.seed + i) for i in range(cfg.trainings)]
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        orders = torch.stack([torch.randperm(len(x), generator=shuffle) for shuffle in shuffles])
        for start in range(0, len(x), cfg.batch_size):
            index = orders[:, start:start + cfg.batch_size]
            stacked_step(stack, optimizer, x[index], y[index], CLASSIFICATION)
        seconds.append(time.perf_counter() - started)
    tiny = torch.finfo(torch.float32).tiny
    moments = torch.cat([optimizer.state[p]["exp_avg"].flatten() for p in stack.parameters()])
    denormal = ((moments.abs() < tiny) & (moments != 0)).double().mean().item()
    print(" ".join(f"{s:.2f}" for s in seconds), f"{100 * denormal:.1f}")


def main() -> None:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    print(f"part1_2a, 8 DNNs stacked, batch 128, {torch.get_num_threads()} threads: seconds per epoch")
    for flushed in (False, True):
        setup = "from hw1track.training.denormals import flush_denormals; flush_denormals(); " if flushed else ""
        code = f"{setup}import sys; sys.path[:0] = ['benchmarks', '.']; import denormals; denormals.train({epochs})"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times, denormal = done.stdout.split()[:-1], done.stdout.split()[-1]
        print(f"  denormals {'flushed' if flushed else 'kept   '}: {' '.join(times)}  "
              f"(denormal Adam first moments at the end: {denormal} %)")


if __name__ == "__main__":
    main()
