"""part1_2c: when the gradient is almost zero, how many Hessian eigenvalues are positive (minimal ratio)?

The DNN 1-10-10-10-1 (P = 251) is trained 100 times from 100 seeds on sinc
(200 points of (0, 1], full batch), all 100 (times the replicates, whose
trainings are 100 more seeds each) together as one stack:

- phase 1: Adam 1e-3 on the MSE for `epochs` updates;
- phase 2, from the same phase-1 weights once per method of `phase2_methods`
  (a child run per training and method, so the methods are compared pairwise):
  - `adam`: Adam on ‖∇L‖² itself (differentiated through the gradient), each
    model stopping once ‖∇L‖ < `grad_norm_threshold`, or after `phase2_steps`
    updates;
  - `levenberg_marquardt`: Levenberg–Marquardt steps −(H² + μI)⁻¹H∇L on ½‖∇L‖²
    with the full Hessian H (`curvature.levenberg_marquardt`), stopping below
    the threshold, when its best step lowers ‖∇L‖ by less than 1 % (stalled),
    or after `phase2_lm_steps` iterations.

Then, per model, the full 251×251 Hessian of the MSE on all 200 points (every
cross-layer block included), in float64, and its eigenvalues and eigenvectors
by a symmetric solver. Each child run has `final_loss`, `final_grad_norm`
(whether or not it reached the threshold: that says how close to critical the
point is), `reached_grad_norm_threshold`, `minimal_ratio` (fraction of
eigenvalues > 0), `minimal_ratio_tol` (the same among eigenvalues with
|λ| > tol·max|λ|), `lambda_min`, `lambda_max`, `n_near_zero_eigenvalues`,
`grad_null_fraction` (the share of ‖∇L‖² in the Hessian's near-null space
|λ| ≤ tol·max|λ|, tol = `zero_tolerance`: near 1 at a gradient-flat point,
near 0 at a critical point), `hessian_grad_ratio` (‖H∇L‖/(max|λ|·‖∇L‖), the
same question without a tolerance), `phase2_stalled` (Levenberg–Marquardt
only), and as artifacts the eigenvalues, the final weights and
`spectrum_by_tolerance.csv` (minimal ratio and `grad_null_fraction` at 37
tolerances from 1e-10 to 1e-1: most eigenvalues are numerically zero, so the
minimal ratio is mostly where zero is taken to end); `loss` / `grad_norm` per
iteration of both phases (phase 2 starts at step `phase2_start_step`).

Cost, measured as CPU time (user + sys, `time.process_time`, the minimum of 3
repeats) with one torch thread, while another long job kept both cores of the
machine busy (wall time then says little): for the quick preset's 40 nets (2
seeds), eigenvectors as well as eigenvalues, the gradient's share and the
tolerance tables cost 0.08 s more than the eigenvalues alone, the new artifact
on 40 children 0.05 s, and in the analysis reading the 40 tables back 0.5 s,
the three new figures 1.1 s (drawn and saved) and the new claims 0.06 s: about
1.8 s in all, within the 3 s the quick study can spare. Levenberg–Marquardt
on 40 nets of the quick recipe (seeds 0 to 39) took 3.5 s (77 Hessians in 7
iterations; 23 of 40 below 1e-4, 17 stalled) where Adam's 1,000 steps took
6.4 s (21 of 40); with the Hessians at its end points and the logging of 40
more children, it would add an estimated 8 s to the quick study, so the quick
preset runs Adam only and `--set phase2_methods=adam,levenberg_marquardt` adds
it. The full preset runs both: on 100 nets of its recipe Levenberg–Marquardt
took 4.6 s (94 Hessians in 4 iterations; 91 of 100 below 1e-4, as many as
Adam's 2,000 steps, which took 44.5 s), so its 300 more children (3 seeds)
should cost about 40 s of CPU, most of it their logging and final Hessians.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import pandas as pd
import torch

from hw1track.config import SWEEP, seed_setting, setting
from hw1track.measures import curvature
from hw1track.study.context import RunContext
from hw1track.tracking.names import (HESSIAN_EIGENVALUES_ARTIFACT, SPECTRUM_BY_TOLERANCE_ARTIFACT, TAG_STUCK,
                                     WEIGHTS_ARTIFACT)
from hw1track.tracking.runs import ReusedRun, TrackedRun
from hw1track.training.full_batch import Trajectory, log_trajectory, minimise
from hw1track.training.models import describe, mlp, n_params, seeded_model
from hw1track.training.stacks import DenseReluStack
from hw1track.training.targets import sample_target

DATA = "synthetic"
# No THREADS: the hand-written stack's operations span all 100 models ((100, 200, 10) activations),
# large enough that on a quiet machine 2 threads run a step 1.5x (phase 2) to 1.8x (phase 1) faster
# than 1 (benchmarks/part1_2c_batched.py).

TARGET = "sinc"
WIDTHS = (1, 10, 10, 10, 1)  # P = 251
# Everything, training included, is float64: the threshold, the final gradient
# norm and the Hessian then all describe the same point to ~1e-16.
DTYPE = torch.float64
# A net whose ReLUs all died outputs one constant; its loss is Var(y) and its
# gradient exactly zero, a degenerate critical point reported as `hw1track.stuck`.
COLLAPSED_OUTPUT_STD = 1e-9
ADAM, LEVENBERG_MARQUARDT = "adam", "levenberg_marquardt"
PHASE2_METHODS = (ADAM, LEVENBERG_MARQUARDT)


@dataclass(frozen=True)
class Config:
    n_trainings: int = setting(100, role=SWEEP)
    n_points: int = 200
    epochs: int = 5000  # phase 1: full-batch Adam updates on the MSE
    lr: float = 1e-3
    # each starts from the same phase-1 weights; a child per (training, method)
    phase2_methods: tuple[str, ...] = setting(PHASE2_METHODS, choices=PHASE2_METHODS, role=SWEEP)
    phase2_steps: int = 2000  # adam: cap on the updates of ‖∇L‖²
    phase2_lr: float = 1e-5  # Adam moves every weight by ~lr a step: 1e-3 overshoots the threshold it aims for
    phase2_lm_steps: int = 20  # levenberg_marquardt: cap on its iterations, one full Hessian each
    grad_norm_threshold: float = 1e-4
    zero_tolerance: float = curvature.RELATIVE_ZERO_TOLERANCE  # also the τ of `grad_null_fraction`
    # Per-iteration `loss`/`grad_norm` of every 10th update (and each phase's last): all of them
    # would be ~1.4M rows for SQLite, minutes of writing for no visible difference in a curve.
    log_every: int = 10
    seed: int = seed_setting()


PRESETS = {
    "full": Config(),
    "quick": Config(n_trainings=20, epochs=2500, phase2_steps=1000, phase2_methods=(ADAM,)),
}


def phase2_params(cfg: Config, method: str) -> dict:
    """What a child's phase 2 was: its method, objective, and its own step cap under `phase2_steps`."""
    if method == ADAM:
        return {"phase2_method": ADAM, "phase2_objective": "squared_grad_norm", "phase2_steps": cfg.phase2_steps,
                "phase2_lr": cfg.phase2_lr}
    return {"phase2_method": LEVENBERG_MARQUARDT, "phase2_objective": "squared_grad_norm",
            "phase2_steps": cfg.phase2_lm_steps, "phase2_definition": curvature.LEVENBERG_MARQUARDT_DEFINITION}


def run(cfg: Config, ctx: RunContext) -> None:
    x, y = (t.to(ctx.device, DTYPE) for t in sample_target(TARGET, cfg.n_points))
    recipe = {"model": "dnn", "widths": describe(WIDTHS), "depth": len(WIDTHS) - 2,
              "n_params": n_params(mlp(WIDTHS)), "target": TARGET, "lr": cfg.lr, "batch_size": cfg.n_points,
              "n_train": cfg.n_points, "epochs": cfg.epochs,
              "grad_norm_threshold": cfg.grad_norm_threshold, "dtype": str(DTYPE).removeprefix("torch."),
              "hessian": "full PxP of the full-data MSE", "hessian_method": curvature.HESSIAN_METHOD,
              "zero_tolerance": cfg.zero_tolerance, "minimal_ratio_definition": curvature.MINIMAL_RATIO_DEFINITION,
              "minimal_ratio_tol_definition": curvature.MINIMAL_RATIO_TOL_DEFINITION,
              "grad_null_fraction_definition": curvature.GRAD_NULL_FRACTION_DEFINITION,
              "hessian_grad_ratio_definition": curvature.HESSIAN_GRAD_RATIO_DEFINITION,
              "tolerance_grid": curvature.TOLERANCE_GRID_DESCRIPTION,
              "tolerance_curve_definition": curvature.TOLERANCE_CURVE_DEFINITION}
    methods = tuple(dict.fromkeys(cfg.phase2_methods))
    with ExitStack() as opened:
        children = {}  # seed -> {method: the child run of a training that is not reused}
        replicate_of = {}  # seed -> its replicate's index
        for replicate in ctx.replicates:
            for i in range(cfg.n_trainings):
                seed = replicate.seed(cfg.seed + i)
                for method in methods:
                    # every training is another seed of one net: all of them, in every replicate, form one group
                    child = opened.enter_context(ctx.parent.child(
                        replicate.name(f"{TARGET}/dnn/{i:03d}/{method}"),
                        {**recipe, **phase2_params(cfg, method), "seed": seed, "training": i, **replicate.params},
                        per_replicate=("training",)))
                    if not isinstance(child, ReusedRun):  # a reused run already holds everything logged below
                        children.setdefault(seed, {})[method] = child
                        replicate_of[seed] = replicate.index
        if children:
            _train_and_measure(cfg, ctx, x, y, children, replicate_of)


def _adam(cfg: Config, stack: DenseReluStack, x: torch.Tensor, y: torch.Tensor) -> tuple[Trajectory, dict]:
    return minimise(stack, x, y, objective="squared_grad_norm", steps=cfg.phase2_steps, lr=cfg.phase2_lr,
                    stop_below=cfg.grad_norm_threshold), {}


def _levenberg_marquardt(cfg: Config, stack: DenseReluStack, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[Trajectory, dict]:
    search = curvature.levenberg_marquardt(curvature.StackField(stack, x, y), stack.flat(),
                                           steps=cfg.phase2_lm_steps, stop_below=cfg.grad_norm_threshold)
    with torch.no_grad():
        stack.theta.copy_(search.thetas)
    trajectory = Trajectory(search.loss, search.grad_norm, search.steps_taken, search.reached)
    return trajectory, {"phase2_stalled": search.stalled.double()}


# Each method moves the stack to where its phase 2 ends, and returns its trajectory and per-model metrics of its own.
PHASE2: dict[str, Callable[[Config, DenseReluStack, torch.Tensor, torch.Tensor], tuple[Trajectory, dict]]] = {
    ADAM: _adam, LEVENBERG_MARQUARDT: _levenberg_marquardt}


def reached_metric(method: str) -> str:
    """The parent metric counting one replicate's trainings that `method` brought below the threshold."""
    return f"n_reached_grad_norm_threshold_{method}"


def _train_and_measure(cfg: Config, ctx: RunContext, x: torch.Tensor, y: torch.Tensor,
                       children: dict[int, dict[str, TrackedRun]], replicate_of: dict[int, int]) -> None:
    """Phase 1 for all trainings as one stack, then each method's phase 2 and every Hessian; a row per child.

    The parent's metrics have one step per replicate, so that replicates trained
    as separate tasks never overwrite each other: `n_reached_grad_norm_threshold_<method>`
    at step r counts replicate r's trainings (those trained here), as
    `n_reached_grad_norm_threshold` does for Adam's; `training_seconds` (both
    phases), `phase2_seconds_<method>` and `hessian_seconds`, which belong to the
    whole stack, are at the step of its first replicate (0 when one stack holds them all).
    """
    seeds = list(children)
    phase1_stack = DenseReluStack([seeded_model(lambda: mlp(WIDTHS), seed, ctx.device).to(DTYPE) for seed in seeds])
    started = time.perf_counter()
    phase1 = minimise(phase1_stack, x, y, objective="loss", steps=cfg.epochs, lr=cfg.lr)
    seconds = {"training_seconds": time.perf_counter() - started, "hessian_seconds": 0.0}
    ctx.report(f"{len(seeds)} trainings, phase 1 in {seconds['training_seconds']:.1f}s")
    for method in dict.fromkeys(m for methods in children.values() for m in methods):
        rows = [i for i, seed in enumerate(seeds) if method in children[seed]]
        stack = curvature.restacked(phase1_stack, phase1_stack.flat()[rows])
        phase2, own_metrics, measured = _phase2_and_measure(cfg, ctx, method, stack, x, y, seconds)
        _log_reached(ctx, method, phase2, [replicate_of[seeds[i]] for i in rows])
        for j, i in enumerate(rows):
            _log_child(cfg, children[seeds[i]][method], phase1, i, phase2, j, measured, own_metrics, stack)
    ctx.parent.log_metrics(seconds, step=min(replicate_of.values()))


def _phase2_and_measure(cfg: Config, ctx: RunContext, method: str, stack: DenseReluStack, x: torch.Tensor,
                        y: torch.Tensor, seconds: dict[str, float]) -> tuple[Trajectory, dict, Measured]:
    """`method`'s phase 2 on `stack` (moved to where it ends), then every model measured there; adds the timings."""
    started = time.perf_counter()
    phase2, own_metrics = PHASE2[method](cfg, stack, x, y)
    trained = time.perf_counter()
    measured = _measure(cfg, stack, x, y)
    seconds["training_seconds"] += trained - started
    seconds[f"phase2_seconds_{method}"] = trained - started
    seconds["hessian_seconds"] += time.perf_counter() - trained
    ctx.report(f"{method}: {int(phase2.reached.sum())} of {len(stack)} reached ‖∇L‖ < {cfg.grad_norm_threshold:g} "
               f"in {trained - started:.1f}s; Hessians and spectra in {time.perf_counter() - trained:.1f}s")
    return phase2, own_metrics, measured


@dataclass(frozen=True)
class Measured:
    """Every model's final loss, gradient, Hessian spectrum and the gradient's place in it, on the full data."""

    loss: torch.Tensor
    grad_norm: torch.Tensor
    collapsed: torch.Tensor
    eigenvalues: torch.Tensor
    grad_null_fraction: torch.Tensor
    hessian_grad_ratio: torch.Tensor
    curves: curvature.ToleranceCurves


def _measure(cfg: Config, stack: DenseReluStack, x: torch.Tensor, y: torch.Tensor) -> Measured:
    """At the final weights, whatever phase 2 achieved."""
    loss, gradients = stack.losses_and_gradients(x, y)
    with torch.no_grad():
        collapsed = stack.outputs(x).std(dim=1).flatten() <= COLLAPSED_OUTPUT_STD * y.std()
    eigenvalues, eigenvectors = torch.linalg.eigh(stack.hessians(x, y).detach())
    energy = curvature.gradient_energy(eigenvectors, gradients)
    return Measured(loss, gradients.norm(dim=1), collapsed, eigenvalues,
                    curvature.grad_null_fraction(eigenvalues, energy, cfg.zero_tolerance),
                    curvature.hessian_grad_ratio(eigenvalues, energy),
                    curvature.tolerance_curves(eigenvalues, energy))


def _log_reached(ctx: RunContext, method: str, phase2: Trajectory, replicates: list[int]) -> None:
    by_replicate = torch.tensor(replicates)
    for r in sorted(set(replicates)):
        reached = float(phase2.reached.cpu()[by_replicate == r].sum())
        ctx.parent.log_metrics({reached_metric(method): reached}, step=r)
        if method == ADAM:
            ctx.parent.log_metrics({"n_reached_grad_norm_threshold": reached}, step=r)


def _log_child(cfg: Config, child: TrackedRun, phase1: Trajectory, phase1_row: int, phase2: Trajectory, i: int,
               measured: Measured, own_metrics: dict[str, torch.Tensor], stack: DenseReluStack) -> None:
    """Model `i` of the method's stack (row `phase1_row` of phase 1): its curves, numbers and artifacts."""
    phase2_start = log_trajectory(child, phase1, phase1_row, first_step=1, every=cfg.log_every, include_final=False)
    log_trajectory(child, phase2, i, first_step=phase2_start, every=cfg.log_every)
    spectrum = curvature.summarise_spectrum(measured.eigenvalues[i], cfg.zero_tolerance)
    child.log_metrics({"final_loss": measured.loss[i].item(), "final_grad_norm": measured.grad_norm[i].item(),
                       **spectrum.as_metrics(), "grad_null_fraction": measured.grad_null_fraction[i].item(),
                       "hessian_grad_ratio": measured.hessian_grad_ratio[i].item(),
                       "phase2_start_step": phase2_start, "phase2_steps_taken": int(phase2.steps_taken[i]),
                       "reached_grad_norm_threshold": float(phase2.reached[i]),
                       **{name: values[i].item() for name, values in own_metrics.items()}}, step=0)
    child.log_tensors({"eigenvalues": measured.eigenvalues[i].cpu(), "zero_tolerance": cfg.zero_tolerance},
                      HESSIAN_EIGENVALUES_ARTIFACT)
    child.log_csv(pd.DataFrame(measured.curves.table(i)), SPECTRUM_BY_TOLERANCE_ARTIFACT)
    child.log_tensors(stack.state_dict(i), WEIGHTS_ARTIFACT)
    child.set_tags({TAG_STUCK: str(bool(measured.collapsed[i])).lower()})
