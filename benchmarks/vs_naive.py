"""hw1track against a typical notebook reproduction (naive_reference.py), side by side in one process.

    .venv/bin/python benchmarks/vs_naive.py [--workloads W1,W2,W3,W4] [--scale quick|full] [--threads N]
                                            [--w4-threads 1] [--repeats N] [--out BENCHMARKS.md]

W1  part1_2a: 8 × DNN 784-500-50-10 (P = 418,060), one epoch each at batch 64, with the full-set train
    and test evaluation before and after it (what part1_2a logs); each model a child run. hw1track trains
    the eight side by side, as part1_2a does; the reference one after another.
W2  part1_2c: the 1-10-10-10-1 net (P = 251) from M seeds, a fixed number of full-batch Adam steps on the
    MSE and then on ‖∇L‖² (no early stop, so both sides take the same steps), then every model's full
    float64 Hessian, its eigenvalues and the summary metrics.
W3  part1_3b: one epoch of the widest CNN (dense 1000, P = 1,579,090) at batch 128, evaluated as in W1.
W4  part1_2b: the 1-500-1 sinc fit, full batch, logging loss and grad_norm at every iteration and the
    train loss after it (3 values per iteration): tracked in a real SQLite store, with the machine's
    system metrics sampled as in every `hw1track run` (`HW1TRACK_SYSTEM_METRICS=0` turns them off), vs
    the same fit with logging disabled (the tracking overhead, at --threads and at each of --w4-threads:
    the metric writer process needs a core that training leaves free), and vs the notebook's one
    `log_metric` call per value. Besides the difference of the two runs' times, the tracked run's own
    tracking time is accounted from the inside (AccountedChild): on a shared machine, where identical runs
    differ by more than the 3 % to be resolved, that share is the number that still means something.

hw1track's side calls the functions the run modules use (train.fit, batched.minimise, curvature, the
tracking classes); the reference side is naive_reference.py. Both sides start from the same initial
weights (same seeds, same layer order), see the same data, write to their own temporary SQLite store
(created before the clock starts) and run with the same intra-op threads. MNIST is in memory before the clock
starts on both sides: the reference's per-sample transforms and collation run inside its loop.
The step counts each side reports are counted, not configured, and printed next to the times.

`--scale quick` (subsets, fewer nets and steps) is a smoke test of about a minute; only `full` numbers
mean anything. Timings are wall-clock seconds; on a machine shared with other jobs they are upper bounds,
so the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import psutil
import torch
import torch.nn.functional as F
from mlflow import MlflowClient
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.flop_counter import FlopCounterMode

import naive_reference as naive
from hw1track.measures import curvature
from hw1track.training.full_batch import minimise
from hw1track.training.stacks import DenseReluStack
from hw1track.training.data import load_mnist, prepare_mnist
from hw1track.study.context import Member, RunContext
from hw1track.training.targets import sample_target
from hw1track.training.models import cnn, mlp, n_params
from hw1track.training.threads import intra_op_threads
from hw1track.tracking import system_metrics
from hw1track.tracking.runs import parent_run
from hw1track.tracking.store import Store
from hw1track.training.fit import fit
from hw1track.training.models import seeded_model
from hw1track.training.sinks import NullSink
from hw1track.training.tasks import CLASSIFICATION, REGRESSION
from runs import part1_2a, part1_2b, part1_2c, part1_3b

REPO = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python benchmarks/vs_naive.py"
LR = 1e-3
W1_SEEDS = tuple(range(8))
W1_BATCH = 64
W3_BATCH = 128
W3_WIDTH = max(part1_3b.WIDTHS)
SINC_POINTS = part1_2b.Config().sinc_points
TARGETS = {"W1": 8.0, "W2": 20.0, "W3": 3.0}
OVERHEAD_TARGET_PERCENT = 3.0
COLUMNS = ("workload", "steps (reference / hw1track)", "reference (s)", "hw1track (s)", "ratio", "target",
           "notes")


@dataclass(frozen=True)
class Scale:
    n_train: int | None  # MNIST examples (None: all 60,000 / 10,000)
    n_test: int | None
    function_nets: int
    phase1_steps: int
    phase2_steps: int
    sinc_iterations: int
    sgemm_size: int


SCALES = {
    "full": Scale(None, None, function_nets=100, phase1_steps=1000, phase2_steps=200, sinc_iterations=20_000,
                  sgemm_size=4096),
    "quick": Scale(2_000, 1_000, function_nets=10, phase1_steps=100, phase2_steps=20, sinc_iterations=200,
                   sgemm_size=2048),
}


@dataclass
class Result:
    workload: str
    reference_steps: int
    hw1track_steps: int
    reference_seconds: float
    hw1track_seconds: float
    target: str
    notes: str

    @property
    def ratio(self) -> float:
        return self.reference_seconds / self.hw1track_seconds

    def cells(self) -> list[str]:
        return [self.workload, f"{self.reference_steps:,} / {self.hw1track_steps:,}",
                f"{self.reference_seconds:.2f}", f"{self.hw1track_seconds:.2f}", f"{self.ratio:.2f}×",
                self.target, self.notes]


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


class OptimizerSteps:
    """Counts every `optimizer.step()` taken inside it: what the training did, not what it was asked to do."""

    def __enter__(self):
        self.count = 0
        self._hook = register_optimizer_step_post_hook(self._counted)
        return self

    def _counted(self, optimizer, args, kwargs) -> None:
        self.count += 1

    def __exit__(self, *exc):
        self._hook.remove()
        return False


def same_steps(workload: str, reference: int, hw1track: int) -> None:
    print(f"  {workload} steps: reference {reference:,}, hw1track {hw1track:,}"
          f"{'' if reference == hw1track else '  <-- DIFFERENT: the comparison is invalid'}")


def target_cell(workload: str, ratio: float) -> str:
    wanted = TARGETS[workload]
    return f"≥ {wanted:g}×: {'met' if ratio >= wanted else 'missed'}"


class Stores:
    """One fresh SQLite store per side and workload, created (schema and experiment) before any clock starts."""

    def __init__(self, folder: Path):
        self.folder = folder

    def hw1track(self, workload: str) -> Store:
        store = Store(f"sqlite:///{self.folder / f'{workload}-hw1track.db'}")
        store.experiment_id(workload, create=True)
        return store

    def reference(self, workload: str) -> str:
        uri = f"sqlite:///{self.folder / f'{workload}-reference.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(workload)
        return uri


def flops_per_example(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(training, evaluation) FLOPs per example: forward+backward, and forward alone (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    train = counter.get_total_flops() / len(x)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.zero_grad(set_to_none=True)
    return train, counter.get_total_flops() / len(x)


@functools.cache
def sgemm_gflops(size: int, threads: int) -> float:
    """Float32 matmul throughput of this machine with `threads` (the current count): the roofline of W1 and W3."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b))[0] for _ in range(5))
    return 2 * size ** 3 / best / 1e9


def roofline(flops: float, theirs: float, ours: float, scale: Scale) -> str:
    """The achieved matmul/convolution GFLOP/s against the measured sgemm peak, and the ratio that peak would give."""
    peak = sgemm_gflops(scale.sgemm_size, torch.get_num_threads())
    achieved = flops / ours / 1e9
    return (f"{flops / 1e12:.2f} TFLOP: hw1track {achieved:.1f} GFLOP/s = {100 * achieved / peak:.0f} % of "
            f"sgemm peak {peak:.1f} GFLOP/s (reference {flops / theirs / 1e9:.1f}); at that peak the ratio "
            f"would be {theirs / (flops / peak / 1e9):.1f}×")


def mnist_tensors(scale: Scale):
    mnist = load_mnist()
    n_train, n_test = scale.n_train or len(mnist.train_x), scale.n_test or len(mnist.test_x)
    return (mnist.train_x[:n_train], mnist.train_y[:n_train]), (mnist.test_x[:n_test], mnist.test_y[:n_test])


def train_children(store: Store, experiment: str, models: list[tuple[str, int, torch.nn.Module]], train, test,
                   batch_size: int) -> tuple[int, list[float]]:
    """hw1track's path for MNIST models: one parent run, each model a child run trained by `fit`."""
    accuracies = []
    with OptimizerSteps() as steps, parent_run(store, experiment, "bench", experiment, {}) as parent:
        for name, seed, model in models:
            params = {"model": name, "seed": seed, "lr": LR, "batch_size": batch_size, "epochs": 1,
                      "n_params": n_params(model)}
            with parent.child(name, params) as child:
                final = fit(model, train, task=CLASSIFICATION, epochs=1, batch_size=batch_size, lr=LR, seed=seed,
                            eval_splits={"train": train, "test": test}, sink=child)
            accuracies.append(final["test_acc"])
    return steps.count, accuracies


def train_together_children(store: Store, experiment: str, models: list[tuple[str, int, torch.nn.Module]], train,
                            test, batch_size: int) -> tuple[int, list[float]]:
    """part1_2a's path: one parent run, the models trained side by side by `RunContext.train_together`."""
    members = {name: Member(model, seed, params={}) for name, seed, model in models}
    with OptimizerSteps() as steps, parent_run(store, experiment, "bench", experiment, {}) as parent:
        finals = RunContext(parent, torch.device("cpu"), None).train_together(
            members, train=train, eval_splits={"train": train, "test": test}, task=CLASSIFICATION, epochs=1,
            batch_size=batch_size, lr=LR)
    return steps.count * len(models), [final["test_acc"] for final in finals.values()]  # a step updates every model


def w1(scale: Scale, stores: Stores, args) -> list[Result]:
    train, test = mnist_tensors(scale)
    loaders = naive.mnist_loaders(str(prepare_mnist()), W1_BATCH, scale.n_train, scale.n_test)
    models = [(f"dnn/run{i}", seed, seeded_model(lambda: mlp(part1_2a.WIDTHS), seed)) for i, seed in enumerate(W1_SEEDS)]
    train_flops, eval_flops = flops_per_example(mlp(part1_2a.WIDTHS), train[0][:W1_BATCH], train[1][:W1_BATCH])
    n_train, n_test = len(train[0]), len(test[0])
    flops = len(W1_SEEDS) * (train_flops * n_train + eval_flops * 2 * (n_train + n_test))

    store = stores.hw1track("W1")
    ours, (our_steps, our_accuracies) = timed(lambda: train_together_children(store, "W1", models, train, test,
                                                                              W1_BATCH))
    stores.reference("W1")
    theirs, (their_steps, their_accuracies) = timed(lambda: naive.part1_2a(loaders, W1_SEEDS, W1_BATCH, epochs=1))
    same_steps("W1", their_steps, our_steps)
    print(f"  W1 test accuracy: reference {statistics.mean(their_accuracies):.4f}, "
          f"hw1track {statistics.mean(our_accuracies):.4f} (mean of {len(W1_SEEDS)})")
    notes = roofline(flops, theirs, ours, scale)
    ratio = theirs / ours
    return [Result("W1 part1_2a: 8 × DNN 784-500-50-10, 1 epoch, batch 64", their_steps, our_steps, theirs, ours,
                   target_cell("W1", ratio), notes)]


def w2_hw1track(store: Store, x, y, seeds, scale: Scale) -> tuple[int, list[dict[str, float]]]:
    """part1_2c's path: the models as one stack, both phases, the Hessians, the summaries logged."""
    cfg = part1_2c.Config()
    with parent_run(store, "W2", "bench", "part1_2c", {}) as parent:
        stack = DenseReluStack([seeded_model(lambda: mlp(part1_2c.WIDTHS), seed).to(part1_2c.DTYPE) for seed in seeds])
        phase1 = minimise(stack, x, y, objective="loss", steps=scale.phase1_steps, lr=cfg.lr)
        phase2 = minimise(stack, x, y, objective="squared_grad_norm", steps=scale.phase2_steps, lr=cfg.phase2_lr)
        final_loss, final_gradients = stack.losses_and_gradients(x, y)
        final_grad_norm = final_gradients.norm(dim=1)
        eigenvalues = curvature.hessian_eigenvalues(stack.hessians(x, y))
        summaries = []
        for i in range(len(seeds)):
            spectrum = curvature.summarise_spectrum(eigenvalues[i], cfg.zero_tolerance)
            summary = {"final_loss": final_loss[i].item(), "final_grad_norm": final_grad_norm[i].item(),
                       "minimal_ratio": spectrum.minimal_ratio, "lambda_min": spectrum.lambda_min,
                       "lambda_max": spectrum.lambda_max}
            parent.log_metrics(summary, step=i)
            summaries.append(summary)
    return int(phase1.steps_taken.sum() + phase2.steps_taken.sum()), summaries


def w2(scale: Scale, stores: Stores, args) -> list[Result]:
    cfg = part1_2c.Config()
    x, y = (t.to(part1_2c.DTYPE) for t in sample_target(part1_2c.TARGET, cfg.n_points))
    seeds = list(range(scale.function_nets))
    store = stores.hw1track("W2")
    ours, (our_steps, our_summaries) = timed(lambda: w2_hw1track(store, x, y, seeds, scale))
    stores.reference("W2")
    theirs, (their_steps, their_summaries) = timed(lambda: naive.part1_2c(
        x, y, seeds, scale.phase1_steps, scale.phase2_steps, lr=cfg.lr, phase2_lr=cfg.phase2_lr))
    same_steps("W2", their_steps, our_steps)
    pairs = list(zip(our_summaries, their_summaries))
    loss_gap = max(abs(a["final_loss"] - b["final_loss"]) / abs(b["final_loss"]) for a, b in pairs)
    lambda_gap = max(abs(a["lambda_max"] - b["lambda_max"]) / abs(b["lambda_max"]) for a, b in pairs)
    ratio_gap = max(abs(a["minimal_ratio"] - b["minimal_ratio"]) for a, b in pairs)
    print(f"  W2 agreement (same initial weights): final loss to {loss_gap:.0e}, λ_max to {lambda_gap:.0e} "
          f"(relative); minimal ratio within {ratio_gap:.3f} (signs of eigenvalues within rounding of 0)")
    ratio = theirs / ours
    notes = (f"{len(seeds)} nets × ({scale.phase1_steps} + {scale.phase2_steps}) steps + Hessians; hw1track at "
             f"{torch.get_num_threads()} threads, as the reference; "
             f"results agree: final loss to {loss_gap:.0e}, λ_max to {lambda_gap:.0e}")
    return [Result(f"W2 part1_2c: {len(seeds)} × DNN 1-10-10-10-1, training + full Hessian", their_steps,
                   our_steps, theirs, ours, target_cell("W2", ratio), notes)]


def w3(scale: Scale, stores: Stores, args) -> list[Result]:
    train, test = mnist_tensors(scale)
    loaders = naive.mnist_loaders(str(prepare_mnist()), W3_BATCH, scale.n_train, scale.n_test)
    seed = part1_3b.Config().seed + part1_3b.WIDTHS.index(W3_WIDTH)
    model = seeded_model(lambda: cnn(part1_3b.Config().channels, (W3_WIDTH,)), seed)
    store = stores.hw1track("W3")
    ours, (our_steps, (our_accuracy,)) = timed(lambda: train_children(
        store, "W3", [(f"dense{W3_WIDTH}", seed, model)], train, test, W3_BATCH))
    stores.reference("W3")
    theirs, (their_steps, their_accuracy) = timed(lambda: naive.part1_3b_widest(
        loaders, seed, W3_BATCH, epochs=1, width=W3_WIDTH))
    same_steps("W3", their_steps, our_steps)
    ratio = theirs / ours
    print(f"  W3 test accuracy: reference {their_accuracy:.4f}, hw1track {our_accuracy:.4f}")
    n_train, n_test = len(train[0]), len(test[0])
    train_flops, eval_flops = flops_per_example(cnn(part1_3b.Config().channels, (W3_WIDTH,)), train[0][:W3_BATCH],
                                                train[1][:W3_BATCH])
    notes = roofline(train_flops * n_train + eval_flops * 2 * (n_train + n_test), theirs, ours, scale)
    return [Result(f"W3 part1_3b: CNN dense {W3_WIDTH}, 1 epoch, batch 128", their_steps, our_steps, theirs, ours,
                   target_cell("W3", ratio), notes)]


def w4_hw1track(sink_for, x, y, iterations: int) -> int:
    model = seeded_model(lambda: mlp(part1_2b.SINC_WIDTHS), part1_2b.Config().seed)
    with OptimizerSteps() as steps, sink_for() as sink:
        fit(model, (x, y), task=REGRESSION, epochs=iterations, batch_size=len(x), lr=LR, seed=part1_2b.Config().seed,
            eval_splits={"train": (x, y)}, sink=sink, log_iterations=True)
    return steps.count


class TrackedChild:
    """part1_2b's sinc child run in a fresh client (so a fresh metric writer too), as one `hw1track run` has."""

    def __init__(self, uri: str, iterations: int):
        self.uri, self.iterations, self.run_id = uri, iterations, None

    def __enter__(self):
        self._parent_cm = parent_run(Store(self.uri), "W4", "bench", "part1_2b", {})
        parent = self._parent_cm.__enter__()
        self._child_cm = parent.child("sinc/1-500-1", {"model": "sinc/1-500-1", "iterations": self.iterations})
        child = self._child_cm.__enter__()
        self.run_id = child.run_id
        return child

    def __exit__(self, *exc):
        try:
            self._child_cm.__exit__(*exc)
        finally:
            self._parent_cm.__exit__(*exc)
        return False


class AccountedChild(TrackedChild):
    """A tracked child whose tracking is timed from the inside: the main thread's wall time in starting and
    ending the runs and in every call on the run, and the CPU time of the process's other Python threads
    (MLflow's system-metrics monitor; any other thread is charged to tracking too, which errs high).
    Counted within one run, this share does not depend on how fast the machine
    happened to be, where the difference between a tracked and an untracked run does: on a shared
    machine identical runs differ by far more than the 3 % to be resolved."""

    def __init__(self, uri: str, iterations: int):
        super().__init__(uri, iterations)
        self.seconds = 0.0
        self.thread_cpu = 0.0

    def __enter__(self):
        started = time.perf_counter()
        child = super().__enter__()
        self.seconds += time.perf_counter() - started
        self._threads_before = python_thread_cpu()
        return TimedCalls(child, self)

    def __exit__(self, *exc):
        before, after = self._threads_before, python_thread_cpu()  # the monitor stops with the parent run
        self.thread_cpu = sum(cpu - before.get(thread, 0.0) for thread, cpu in after.items())
        started = time.perf_counter()
        try:
            return super().__exit__(*exc)
        finally:
            self.seconds += time.perf_counter() - started


class TimedCalls:
    """Stands in for a run, adding the wall time of each call made on it to `clock.seconds`."""

    def __init__(self, run: Any, clock: AccountedChild):
        self._run, self._clock = run, clock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._run, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def timed_call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self._clock.seconds += time.perf_counter() - started
        return timed_call


def python_thread_cpu() -> dict[int, float]:
    """CPU seconds so far of each Python thread of this process but the calling one, by native id (torch's
    own worker threads are not Python threads, so training is not counted)."""
    others = {thread.native_id for thread in threading.enumerate()} - {threading.get_native_id()}
    return {thread.id: thread.user_time + thread.system_time for thread in psutil.Process().threads()
            if thread.id in others}


class Disabled:
    def __enter__(self):
        return NullSink()

    def __exit__(self, *exc):
        return False


def stored_rows(uri: str, run_id: str | None = None) -> int:
    """Metric rows in the store (of one run, or of every run)."""
    client = MlflowClient(uri)
    runs = [client.get_run(run_id)] if run_id else client.search_runs(
        [e.experiment_id for e in client.search_experiments()])
    return sum(len(client.get_metric_history(run.info.run_id, key)) for run in runs for key in run.data.metrics)


@dataclass
class Overhead:
    """Alternated runs of part1_2b's sinc fit with logging disabled and tracked, at one thread count."""

    threads: int
    disabled: list[float]
    tracked: list[float]
    disabled_cpu: list[float]
    tracked_cpu: list[float]
    steps: tuple[int, int]
    run_id: str
    accounted: list[float]  # tracking's own seconds in each tracked run (AccountedChild)

    @property
    def accounted_percent(self) -> float:
        """The median tracked run's tracking seconds over its seconds without them."""
        shares = [100 * spent / (total - spent) for spent, total in zip(self.accounted, self.tracked)]
        return statistics.median(shares)

    @property
    def percent(self) -> float:
        return 100 * (min(self.tracked) - min(self.disabled)) / min(self.disabled)

    @property
    def cpu_percent(self) -> float:
        return 100 * (min(self.tracked_cpu) - min(self.disabled_cpu)) / min(self.disabled_cpu)


def measure_overhead(uri: str, x, y, iterations: int, threads: int, repeats: int) -> Overhead:
    result = Overhead(threads, [], [], [], [], (0, 0), "", [])
    with intra_op_threads(threads):
        for _ in range(repeats):  # alternated, so that both see the same background load
            cpu = time.process_time()
            seconds, disabled_steps = timed(lambda: w4_hw1track(Disabled, x, y, iterations))
            result.disabled.append(seconds)
            result.disabled_cpu.append(time.process_time() - cpu)
            child = AccountedChild(uri, iterations)
            cpu = time.process_time()
            seconds, tracked_steps = timed(lambda: w4_hw1track(lambda: child, x, y, iterations))
            result.tracked.append(seconds)
            result.tracked_cpu.append(time.process_time() - cpu)
            result.accounted.append(child.seconds + child.thread_cpu)
            result.steps, result.run_id = (disabled_steps, tracked_steps), child.run_id
    print(f"  W4 at {threads} thread(s), wall times (s), logging disabled: "
          f"{', '.join(f'{t:.2f}' for t in result.disabled)}; tracked: {', '.join(f'{t:.2f}' for t in result.tracked)}"
          f"; tracking's own seconds in each tracked run: {', '.join(f'{t:.3f}' for t in result.accounted)}")
    return result


def w4(scale: Scale, stores: Stores, args) -> list[Result]:
    x, y = sample_target("sinc", SINC_POINTS)
    iterations = scale.sinc_iterations
    uri = stores.hw1track("W4").uri
    threads = torch.get_num_threads()
    overheads = {t: measure_overhead(uri, x, y, iterations, t, args.repeats)
                 for t in dict.fromkeys([*args.w4_threads, threads])}
    ours = overheads[threads]
    our_rows = stored_rows(uri, ours.run_id)
    reference_uri = stores.reference("W4")
    theirs, their_steps = timed(lambda: naive.part1_2b_sinc(x, y, part1_2b.Config().seed, iterations))
    their_rows = stored_rows(reference_uri)
    same_steps("W4", their_steps, ours.steps[1])
    print(f"  W4 metric rows stored: reference {their_rows:,}, hw1track {our_rows:,}")
    # the tracked side's parent run samples the machine as every `hw1track run` does, unless switched off
    monitor = (f"system metrics on, a sample every {system_metrics.SAMPLING_SECONDS:g} s" if system_metrics.enabled()
               else f"system metrics off ({system_metrics.SWITCH_ENV}=0)")
    rows = []
    for t, overhead in overheads.items():
        met = "met" if overhead.percent <= OVERHEAD_TARGET_PERCENT else "missed"
        rows.append(Result(
            f"W4 part1_2b sinc, {iterations:,} iterations, {t} thread(s): tracking overhead (reference = "
            f"hw1track with logging disabled)", *overhead.steps, min(overhead.disabled), min(overhead.tracked),
            f"≤ {OVERHEAD_TARGET_PERCENT:g} %: {met}",
            f"overhead {overhead.percent:+.1f} % wall, {overhead.cpu_percent:+.1f} % CPU time of the training "
            f"process; accounted inside the tracked runs (median): {overhead.accounted_percent:+.2f} %; "
            f"{our_rows:,} rows; {monitor}; best of {args.repeats}"))
    rows.append(Result(f"W4 part1_2b sinc, {iterations:,} iterations, {threads} thread(s): tracked, reference = "
                       f"one log_metric per value", their_steps, ours.steps[1], theirs, min(ours.tracked), "—",
                       f"{their_rows:,} / {our_rows:,} rows stored"))
    return rows


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(results: list[Result]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(result.cells()) + " |" for result in results]
    return "\n".join(lines)


def report(results: list[Result], args, threads: int, loads: tuple[float, float], seconds: float) -> str:
    command = f"{COMMAND} --scale {args.scale} --workloads {','.join(args.workloads)}"
    if args.threads:
        command += f" --threads {args.threads}"
    return "\n".join([
        "# hw1track vs a typical notebook reproduction",
        "",
        f"Measured {datetime.now():%Y-%m-%d %H:%M} with `{command}` ({seconds:.0f} s in all). "
        "What each workload and each side does is in the docstrings of `benchmarks/vs_naive.py` and "
        "`benchmarks/naive_reference.py`. The ratio is reference time ÷ hw1track time.",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__}, "
        f"{threads} intra-op thread(s); Python {platform.python_version()}, MLflow {mlflow.__version__}",
        f"- load average (1 min) {loads[0]:.2f} at the start, {loads[1]:.2f} at the end: a load above 0 means "
        "other jobs shared the cores, and the times are upper bounds",
        "",
        table(results),
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="W1,W2,W3,W4", type=lambda s: [w.strip().upper() for w in s.split(",")])
    parser.add_argument("--scale", choices=tuple(SCALES), default="full")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads of both sides (default: torch's)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="alternated W4 repeats, the fastest of each kept (default: 3 full, 1 quick)")
    parser.add_argument("--w4-threads", default=[1], type=lambda s: [int(t) for t in s.split(",")],
                        help="thread counts W4's overhead is also measured at, besides --threads (default: 1)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)} (known: {', '.join(WORKLOADS)})")
    args.repeats = args.repeats or (3 if args.scale == "full" else 1)
    scale = SCALES[args.scale]
    threads = args.threads or torch.get_num_threads()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results: list[Result] = []
    with intra_op_threads(threads), tempfile.TemporaryDirectory(prefix="vs-naive-") as folder:
        stores = Stores(Path(folder))
        for name in args.workloads:
            print(f"{name} ({args.scale}) ...", flush=True)
            rows = WORKLOADS[name](scale, stores, args)
            print("\n".join(table(rows).splitlines()[2:]), flush=True)
            results += rows
    text = report(results, args, threads, (load_before, os.getloadavg()[0]), time.perf_counter() - started)
    print()
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    for noisy in ("mlflow", "alembic"):  # store set-up chatter would hide the table
        logging.getLogger(noisy).setLevel(logging.WARNING)
    main(sys.argv[1:])
