"""part1_3c_ii: sensitivity and sharpness of minima found with different batch sizes.

Five MLPs 784-128-64-10 (P = 109,386) are trained on MNIST with batch sizes
10, 385, 760, 1135 and 1510 and the same recipe otherwise (Adam 1e-3, same
epochs, same initial weights and shuffling seed), so the number of updates
(logged as `n_updates`) falls with the batch size. Each child run logs per-epoch
train/test loss and accuracy and, for the final weights:

- `sensitivity`: the mean over the test set of the Frobenius norm of the
  Jacobian of the softmax output with respect to the input, per example;
- `sharpness_eps1e-3`, `sharpness_eps5e-4`: Keskar et al.'s (2017) φ_ε, the
  largest relative rise (in %) of the cross-entropy on a fixed, seeded training
  subset within the box |y_i| ≤ ε(|θ_i| + 1), found by a few L-BFGS-B iterations;
- `lambda_max` and `hessian_trace`: the largest eigenvalue (30 Lanczos steps,
  with `lambda_max_residual` bounding its error) and the trace (100 Hutchinson
  probes, with `hessian_trace_stderr`) of the Hessian of the mean cross-entropy
  on the same subset, as curvature is measured since Keskar et al. (PyHessian,
  Yao et al. 2020); about 1.5 s per model on 2,000 examples
  (benchmarks/hessian_spectrum.py).

The models of the smallest and the largest batch size also log the Hessian's
eigenvalue density, by stochastic Lanczos quadrature (`hessian_density.csv`:
per probe, the quadrature nodes and their weights), which the analysis draws
on one figure.

Same epochs means batch 10 makes 150 times the updates of batch 1510, so the
large-batch models are compared before they have converged (Hoffer et al.
2017). A second arm (param `arm` = `equal_updates`, the first being
`equal_epochs`) trains every batch size for as many updates as the smallest
batch makes in one epoch, with the same learning rate: the number of epochs of
batch B is that budget over the updates of one epoch, rounded, so the counts
agree to within one epoch of B (`n_updates` is logged exactly). Scaling the
learning rate with the batch instead would change two things at once; a fixed
budget changes only the batch. Its models log the same measures, and their
final training loss shows how far each got. They are evaluated on the full
sets at `eval_points` fixed fractions of the budget (the first epoch reaching
each tenth of batch 10's updates, logged as `evaluated_epochs`) rather than
after each of batch 1510's 150 epochs: the figures use only the final weights,
and an evaluation of the 60,000 training images costs 40 % of a large-batch
epoch, so the arm's curves keep their shape at a fraction of the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from hw1track.config import SWEEP, MnistSplits, setting
from hw1track.measures import sensitivity as input_sensitivity
from hw1track.measures.hessian_spectrum import HessianOperator, hutchinson_trace, spectral_density, top_eigenvalue
from hw1track.measures.sharpness import model_loss, sharpness
from hw1track.study.context import Member, RunContext
from hw1track.tracking.names import HESSIAN_DENSITY_ARTIFACT
from hw1track.training.data import subset
from hw1track.training.models import describe, mlp, seeded_model
from hw1track.training.tasks import CLASSIFICATION

DATA = "mnist"

MODEL = (784, 128, 64, 10)
EQUAL_EPOCHS, EQUAL_UPDATES = "equal_epochs", "equal_updates"  # the arms, as the child param `arm` names them


@dataclass(frozen=True)
class Config(MnistSplits):
    batch_sizes: tuple[int, ...] = setting((10, 385, 760, 1135, 1510), role=SWEEP)
    epochs: int = 10  # batch 10 makes 6,000 updates per epoch: ~13 s of one core, the sweep's main cost
    lr: float = 1e-3
    sharpness_epsilons: tuple[float, ...] = (1e-3, 5e-4)
    sharpness_examples: int = 2_000
    sharpness_maxiter: int = 10
    hessian_lanczos_steps: int = 30  # λ_max's residual bound is below 1e-3 of it by then on these nets
    hessian_trace_probes: int = 100  # a standard error of a few % of the trace
    density_probes: int = 4  # SLQ: ~7.5 s per model for 4 x 80 products on 2,000 examples, two batch sizes only
    density_steps: int = 80
    equal_updates_arm: bool = setting(True, role=SWEEP)  # the second arm: 5 more models per replicate
    eval_points: int = setting(10, minimum=1)  # full-set evaluations of the second arm, besides its initial weights


PRESETS = {
    "full": Config(),
    # The second arm would more than double the quick study (batch 1510 needs 150 epochs to match batch 10's
    # updates): quick leaves it out, and `--set equal_updates_arm=true` adds it.
    # 40 SLQ steps: a quarter of the re-orthogonalisation of 80 (it grows as steps squared), and the top
    # node still agrees with λ_max to 1e-3
    "quick": Config(epochs=2, train_size=6_000, test_size=2_000, sharpness_examples=500, equal_updates_arm=False,
                    density_steps=40),
}


def sharpness_metric(epsilon: float) -> str:
    """'sharpness_eps1e-3' for ε = 0.001: the metric name users query."""
    mantissa, exponent = f"{epsilon:.0e}".split("e")
    return f"sharpness_eps{mantissa}e{int(exponent)}"


def flatness(model, cfg: Config, test_x, sharpness_set) -> dict[str, float]:
    """Sensitivity over the test images and φ_ε on the fixed training subset, under their metric names."""
    measured = {"sensitivity": input_sensitivity.sensitivity(model, test_x)}
    theta, loss = model_loss(model, *sharpness_set)
    for epsilon in cfg.sharpness_epsilons:
        found = sharpness(loss, theta, epsilon, cfg.sharpness_maxiter)
        measured[sharpness_metric(epsilon)] = found.phi
    measured["sharpness_base_loss"] = found.base_loss  # L(θ) on the subset, whatever ε
    operator = HessianOperator.of_model(model, F.cross_entropy, *sharpness_set)
    probes = torch.Generator().manual_seed(cfg.seed)  # the same probes for every model
    top = top_eigenvalue(operator, steps=cfg.hessian_lanczos_steps, generator=probes)
    trace = hutchinson_trace(operator, probes=cfg.hessian_trace_probes, generator=probes)
    measured.update({"lambda_max": top.value, "lambda_max_residual": top.residual, "hessian_trace": trace.value,
                     "hessian_trace_stderr": trace.standard_error})
    return measured


def density_table(model, cfg: Config, sharpness_set) -> pd.DataFrame:
    """SLQ nodes and weights of the Hessian of the same loss as λ_max, one row per (probe, node)."""
    operator = HessianOperator.of_model(model, F.cross_entropy, *sharpness_set)
    density = spectral_density(operator, probes=cfg.density_probes, steps=cfg.density_steps,
                               generator=torch.Generator().manual_seed(cfg.seed))
    probes, steps = density.nodes.shape
    return pd.DataFrame({"probe": torch.arange(probes).repeat_interleave(steps).numpy(),
                         "eigenvalue": density.nodes.flatten().numpy(), "weight": density.weights.flatten().numpy()})


def density_batch_sizes(batch_sizes: tuple[int, ...]) -> set[int]:
    """The batch sizes whose models log their density: the smallest and the largest, the comparison that matters."""
    return {min(batch_sizes), max(batch_sizes)}


def run(cfg: Config, ctx: RunContext) -> None:
    train, test = ctx.mnist_splits(cfg.train_size, cfg.test_size, cfg.seed)
    sharpness_set = subset(*train, cfg.sharpness_examples, cfg.seed)  # the same examples for every model
    measurement_params = {
        "sensitivity_definition": input_sensitivity.DEFINITION, "sensitivity_set": "test",
        "sharpness_examples": len(sharpness_set[0]), "sharpness_subset_seed": cfg.seed,
        "sharpness_maxiter": cfg.sharpness_maxiter, "sharpness_start": "y=0",
        "sharpness_epsilons": ",".join(map(str, cfg.sharpness_epsilons)),
        "hessian_of": "mean cross-entropy on the sharpness subset",
    }

    per_epoch = {batch_size: math.ceil(len(train[0]) / batch_size) for batch_size in cfg.batch_sizes}
    arms = {EQUAL_EPOCHS: {batch_size: cfg.epochs for batch_size in cfg.batch_sizes}}
    if cfg.equal_updates_arm:
        arms[EQUAL_UPDATES] = equal_update_epochs(per_epoch)
    for arm, epochs_of in arms.items():
        for batch_size, epochs in epochs_of.items():
            # the second arm is evaluated at fixed fractions of its updates, the first after every epoch (None)
            evaluated = (checkpoint_epochs(per_epoch[batch_size], epochs, cfg.eval_points)
                         if arm == EQUAL_UPDATES else None)
            schedule = {} if evaluated is None else {"evaluated_epochs": ",".join(map(str, evaluated))}
            extreme = arm == EQUAL_EPOCHS and batch_size in density_batch_sizes(cfg.batch_sizes)

            def log_flatness(child, model, n_updates=epochs * per_epoch[batch_size], epochs=epochs,
                             extreme=extreme):
                measured = {"n_updates": n_updates, **flatness(model, cfg, test[0], sharpness_set)}
                child.log_metrics(measured, step=epochs)
                ctx.report(", ".join(f"{key} {value:.6g}" for key, value in measured.items()))
                if extreme:
                    child.log_csv(density_table(model, cfg, sharpness_set), HESSIAN_DENSITY_ARTIFACT)

            members = {}
            for replicate in ctx.replicates:
                seed = replicate.seed(cfg.seed)  # one seed per replicate: all its models start from the same weights
                name = f"bs{batch_size}" if arm == EQUAL_EPOCHS else f"bs{batch_size}-equal-updates"
                members[replicate.name(name)] = Member(
                    seeded_model(lambda: mlp(MODEL), seed, ctx.device), seed,
                    params={"widths": describe(MODEL), "arm": arm, **measurement_params, **replicate.params,
                            **schedule},
                    log_artifacts=log_flatness)
            # the replicates of one batch size train side by side: at batch 10 a step is mostly overhead
            ctx.train_together(members, train=train, eval_splits={"train": train, "test": test},
                               task=CLASSIFICATION, epochs=epochs, batch_size=batch_size, lr=cfg.lr,
                               evaluate_at=evaluated)


def equal_update_epochs(updates_per_epoch: dict[int, int]) -> dict[int, int]:
    """Epochs per batch size that give each about the updates of one epoch of the smallest batch."""
    budget = updates_per_epoch[min(updates_per_epoch)]
    return {batch_size: max(1, round(budget / per_epoch)) for batch_size, per_epoch in updates_per_epoch.items()}


def checkpoint_epochs(updates_per_epoch: int, epochs: int, points: int) -> list[int]:
    """0 and the first epoch at which each of `points` equal fractions of the arm's updates is reached.

    The fractions are of the same budget for every batch size, so the arm's
    curves are sampled at about the same update counts whatever the batch.
    """
    total = updates_per_epoch * epochs
    return sorted({0, *(min(epochs, math.ceil(total * k / points / updates_per_epoch)) for k in range(1, points + 1))})
