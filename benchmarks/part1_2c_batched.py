"""What part1_2c's speed choices are worth, measured on this machine.

1. Training: the same models, same steps, one at a time (torch.optim.Adam per
   module) or stacked (hw1track.training.full_batch.minimise) with the generic vmapped
   stack or the hand-written DenseReluStack, for each phase.
2. Intra-op threads (1 vs 2) for the stacked training, alternated round by round
   so that both see the same background load.
3. The full Hessian: every method of hessian_methods.HESSIAN_METHODS (the
   library's and the alternatives it was chosen over), vmapped over 1 model at
   a time or over several, and DenseReluStack.hessians, which differentiates
   the hand-written gradient pass of all the models at once.

1 and 3 run with torch's default thread count, as the experiment does.

    python benchmarks/part1_2c_batched.py [models] [rounds]

Other jobs share the 2 cores, so every number is the median of `rounds` runs.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from hessian_methods import HESSIAN_METHODS, full_hessian
from hw1track.measures import curvature
from hw1track.training.full_batch import minimise
from naive_reference import minimise_one_at_a_time
from hw1track.training.stacks import DenseReluStack, ModelStack
from hw1track.training.targets import sample_target
from hw1track.training.models import mlp
from hw1track.training.models import seeded_model
from runs.part1_2c import DTYPE, PRESETS, WIDTHS

PHASE_STEPS = {"loss": 200, "squared_grad_norm": 100}
HESSIAN_MODELS = 10


def _models(n_models: int):
    return [seeded_model(lambda: mlp(WIDTHS), seed).to(DTYPE) for seed in range(n_models)]


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _median_seconds(work, rounds: int) -> float:
    return statistics.median(_seconds(work) for _ in range(rounds))


def compare_training(x, y, n_models: int, rounds: int) -> None:
    lr = PRESETS["full"].lr
    for objective, steps in PHASE_STEPS.items():
        alone = _median_seconds(lambda: minimise_one_at_a_time(_models(n_models), x, y, objective=objective,
                                                               steps=steps, lr=lr), rounds)
        line = f"  {objective:>17}, {steps} steps: one at a time {alone:6.2f}s"
        for stack_class in (ModelStack, DenseReluStack):
            stacked = _median_seconds(lambda: minimise(stack_class(_models(n_models)), x, y, objective=objective,
                                                       steps=steps, lr=lr), rounds)
            line += f", {stack_class.__name__} {stacked:6.2f}s ({alone / stacked:5.1f}x)"
        print(line)


def compare_threads(x, y, n_models: int, rounds: int) -> None:
    before = torch.get_num_threads()
    times = {1: [], 2: []}
    for _ in range(rounds):
        for threads in times:
            torch.set_num_threads(threads)
            times[threads].append(_seconds(lambda: minimise(DenseReluStack(_models(n_models)), x, y,
                                                            objective="squared_grad_norm", steps=50, lr=1e-5)))
    torch.set_num_threads(before)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"  stacked phase 2, 50 steps: 1 thread {one:.2f}s, 2 threads {two:.2f}s (2 threads = {one / two:.2f}x "
          f"the speed of 1)")


def compare_hessians(x, y, n_models: int, rounds: int) -> None:
    stack = ModelStack(_models(HESSIAN_MODELS))
    thetas = stack.flat()
    mse = curvature.loss_of_flat_params(stack.template, F.mse_loss, x, y)
    reference = full_hessian(mse, thetas, "hvp_loop")
    for method in HESSIAN_METHODS:
        vmapped = method not in ("hvp_loop", curvature.HESSIAN_METHOD)
        for at_once in ((1, HESSIAN_MODELS) if vmapped else (HESSIAN_MODELS,)):
            full_hessian(mse, thetas[:1], method, at_once)  # first-call set-up is not the method's cost
            seconds = _median_seconds(lambda: full_hessian(mse, thetas, method, at_once), rounds)
            gap = (full_hessian(mse, thetas, method, at_once) - reference).abs().max().item()
            print(f"  {method:>20}, {at_once:3d} model(s) at a time: {1e3 * seconds / HESSIAN_MODELS:7.1f} ms per "
                  f"model (max |ΔH| vs hvp_loop {gap:.1e})")
    hand_written = DenseReluStack(_models(n_models))
    seconds = _median_seconds(lambda: hand_written.hessians(x, y), rounds)
    compared = min(n_models, HESSIAN_MODELS)  # the same seeds on both sides
    gap = (hand_written.hessians(x, y)[:compared] - reference[:compared]).abs().max().item()
    print(f"  {'DenseReluStack':>20}, {n_models:3d} model(s) at a time: {1e3 * seconds / n_models:7.1f} ms per "
          f"model (max |ΔH| vs hvp_loop {gap:.1e})")


def main() -> None:
    n_models = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    cfg = PRESETS["full"]
    x, y = (t.to(DTYPE) for t in sample_target("sinc", cfg.n_points))
    print(f"DNN {'-'.join(map(str, WIDTHS))}, {cfg.n_points} points, {DTYPE}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"medians of {rounds} rounds")
    threads = torch.get_num_threads()
    print(f"training {n_models} models, {threads} thread(s):")
    compare_training(x, y, n_models, rounds)
    print(f"full {cfg.n_points}-point Hessians, {threads} thread(s):")
    compare_hessians(x, y, n_models, rounds)
    print(f"threads, {n_models} models:")
    compare_threads(x, y, n_models, rounds)


if __name__ == "__main__":
    main()
