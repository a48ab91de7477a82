"""part1_2c: when the gradient is almost zero, how many Hessian eigenvalues are positive (minimal ratio)?

The DNN 1-10-10-10-1 (P = 251) is trained 100 times from 100 seeds on sinc
(200 points of (0, 1], full batch), all 100 (times the replicates, whose
trainings are 100 more seeds each) together as one stack:

- phase 1: Adam 1e-3 on the MSE for `epochs` updates;
- phase 2: Adam on ‖∇L‖² itself (differentiated through the gradient), each model
  stopping once ‖∇L‖ < `grad_norm_threshold`, or after `phase2_steps` updates.

Then, per model, the full 251×251 Hessian of the MSE on all 200 points (every
cross-layer block included), in float64, and its eigenvalues by a symmetric
solver. Each training is a child run with `final_loss`, `final_grad_norm`
(whether or not it reached the threshold: that says how close to critical the
point is), `minimal_ratio` (fraction of eigenvalues > 0), `minimal_ratio_tol`
(the same among eigenvalues with |λ| > tol·max|λ|), `lambda_min`, `lambda_max`,
`n_near_zero_eigenvalues`, the eigenvalues and final weights as artifacts, and
`loss` / `grad_norm` per iteration of both phases (phase 2 starts at step
`phase2_start_step`).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass

import torch

from hw1track.config import SWEEP, seed_setting, setting
from hw1track.measures import curvature
from hw1track.study.context import RunContext
from hw1track.tracking.names import TAG_STUCK, WEIGHTS_ARTIFACT
from hw1track.tracking.runs import ReusedRun, TrackedRun
from hw1track.training.full_batch import log_trajectory, minimise
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


@dataclass(frozen=True)
class Config:
    n_trainings: int = setting(100, role=SWEEP)
    n_points: int = 200
    epochs: int = 5000  # phase 1: full-batch Adam updates on the MSE
    lr: float = 1e-3
    phase2_steps: int = 2000  # cap on the updates of ‖∇L‖²
    phase2_lr: float = 1e-5  # Adam moves every weight by ~lr a step: 1e-3 overshoots the threshold it aims for
    grad_norm_threshold: float = 1e-4
    zero_tolerance: float = curvature.RELATIVE_ZERO_TOLERANCE
    # Per-iteration `loss`/`grad_norm` of every 10th update (and each phase's last): all of them
    # would be ~1.4M rows for SQLite, minutes of writing for no visible difference in a curve.
    log_every: int = 10
    seed: int = seed_setting()


PRESETS = {
    "full": Config(),
    "quick": Config(n_trainings=20, epochs=2500, phase2_steps=1000),
}


def run(cfg: Config, ctx: RunContext) -> None:
    x, y = (t.to(ctx.device, DTYPE) for t in sample_target(TARGET, cfg.n_points))
    recipe = {"model": "dnn", "widths": describe(WIDTHS), "depth": len(WIDTHS) - 2,
              "n_params": n_params(mlp(WIDTHS)), "target": TARGET, "lr": cfg.lr, "batch_size": cfg.n_points,
              "n_train": cfg.n_points, "epochs": cfg.epochs, "phase2_objective": "squared_grad_norm",
              "phase2_steps": cfg.phase2_steps, "phase2_lr": cfg.phase2_lr,
              "grad_norm_threshold": cfg.grad_norm_threshold, "dtype": str(DTYPE).removeprefix("torch."),
              "hessian": "full PxP of the full-data MSE", "hessian_method": curvature.HESSIAN_METHOD,
              "zero_tolerance": cfg.zero_tolerance, "minimal_ratio_definition": curvature.MINIMAL_RATIO_DEFINITION,
              "minimal_ratio_tol_definition": curvature.MINIMAL_RATIO_TOL_DEFINITION}
    with ExitStack() as opened:
        children = {}  # seed -> the child run of a training that is not reused
        replicate_of = {}  # seed -> its replicate's index
        for replicate in ctx.replicates:
            for i in range(cfg.n_trainings):
                seed = replicate.seed(cfg.seed + i)
                # every training is another seed of one net: all of them, in every replicate, form one group
                child = opened.enter_context(ctx.parent.child(
                    replicate.name(f"{TARGET}/dnn/{i:03d}"),
                    {**recipe, "seed": seed, "training": i, **replicate.params}, per_replicate=("training",)))
                if not isinstance(child, ReusedRun):  # a reused run already holds everything logged below
                    children[seed] = child
                    replicate_of[seed] = replicate.index
        if children:
            _train_and_measure(cfg, ctx, x, y, children, replicate_of)


def _train_and_measure(cfg: Config, ctx: RunContext, x: torch.Tensor, y: torch.Tensor,
                       children: dict[int, TrackedRun], replicate_of: dict[int, int]) -> None:
    """All trainings as one stack, then every Hessian; each child gets its own row of every result.

    The parent's metrics have one step per replicate, so that replicates trained
    as separate tasks never overwrite each other: `n_reached_grad_norm_threshold`
    at step r counts replicate r's trainings (those trained here), and
    `training_seconds` and `hessian_seconds`, which belong to the whole stack, are
    at the step of its first replicate (0 when one stack holds them all).
    """
    stack = DenseReluStack([seeded_model(lambda: mlp(WIDTHS), seed, ctx.device).to(DTYPE) for seed in children])
    started = time.perf_counter()
    phase1 = minimise(stack, x, y, objective="loss", steps=cfg.epochs, lr=cfg.lr)
    phase2 = minimise(stack, x, y, objective="squared_grad_norm", steps=cfg.phase2_steps, lr=cfg.phase2_lr,
                      stop_below=cfg.grad_norm_threshold)
    trained = time.perf_counter()
    ctx.report(f"{len(children)} trainings in {trained - started:.1f}s; "
               f"{int(phase2.reached.sum())} reached ‖∇L‖ < {cfg.grad_norm_threshold:g}")

    # Measured on the full data at the final weights, whatever phase 2 achieved.
    final_loss, final_gradients = stack.losses_and_gradients(x, y)
    final_grad_norm = final_gradients.norm(dim=1)
    with torch.no_grad():
        collapsed = stack.outputs(x).std(dim=1).flatten() <= COLLAPSED_OUTPUT_STD * y.std()
    eigenvalues = curvature.hessian_eigenvalues(stack.hessians(x, y))
    measured = time.perf_counter()
    ctx.report(f"{len(children)} Hessians ({stack.n_params}×{stack.n_params}) and spectra "
               f"in {measured - trained:.1f}s")

    replicates = torch.tensor(list(replicate_of.values()))
    for r in sorted(set(replicate_of.values())):
        reached = phase2.reached.cpu()[replicates == r]
        ctx.parent.log_metrics({"n_reached_grad_norm_threshold": float(reached.sum())}, step=r)
    ctx.parent.log_metrics({"training_seconds": trained - started, "hessian_seconds": measured - trained},
                           step=min(replicate_of.values()))
    for i, child in enumerate(children.values()):
        phase2_start = log_trajectory(child, phase1, i, first_step=1, every=cfg.log_every, include_final=False)
        log_trajectory(child, phase2, i, first_step=phase2_start, every=cfg.log_every)
        spectrum = curvature.summarise_spectrum(eigenvalues[i], cfg.zero_tolerance)
        child.log_metrics({"final_loss": final_loss[i].item(), "final_grad_norm": final_grad_norm[i].item(),
                           **spectrum.as_metrics(), "phase2_start_step": phase2_start,
                           "phase2_steps_taken": int(phase2.steps_taken[i]),
                           "reached_grad_norm_threshold": float(phase2.reached[i])}, step=0)
        child.log_tensors({"eigenvalues": eigenvalues[i].cpu(), "zero_tolerance": cfg.zero_tolerance},
                          "hessian_eigenvalues.pt")
        child.log_tensors(stack.state_dict(i), WEIGHTS_ARTIFACT)
        child.set_tags({TAG_STUCK: str(bool(collapsed[i])).lower()})
