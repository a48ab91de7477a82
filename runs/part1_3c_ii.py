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
  subset within the box |y_i| ≤ ε(|θ_i| + 1), found by a few L-BFGS-B iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hw1track.config import SWEEP, MnistSplits, setting
from hw1track.measures import sensitivity as input_sensitivity
from hw1track.measures.sharpness import model_loss, sharpness
from hw1track.study.context import Member, RunContext
from hw1track.training.data import subset
from hw1track.training.models import describe, mlp, seeded_model
from hw1track.training.tasks import CLASSIFICATION

DATA = "mnist"

MODEL = (784, 128, 64, 10)


@dataclass(frozen=True)
class Config(MnistSplits):
    batch_sizes: tuple[int, ...] = setting((10, 385, 760, 1135, 1510), role=SWEEP)
    epochs: int = 10  # batch 10 makes 6,000 updates per epoch: ~13 s of one core, the sweep's main cost
    lr: float = 1e-3
    sharpness_epsilons: tuple[float, ...] = (1e-3, 5e-4)
    sharpness_examples: int = 2_000
    sharpness_maxiter: int = 10


PRESETS = {
    "full": Config(),
    "quick": Config(epochs=2, train_size=6_000, test_size=2_000, sharpness_examples=500),
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
    return measured


def run(cfg: Config, ctx: RunContext) -> None:
    train, test = ctx.mnist_splits(cfg.train_size, cfg.test_size, cfg.seed)
    sharpness_set = subset(*train, cfg.sharpness_examples, cfg.seed)  # the same examples for every model
    measurement_params = {
        "sensitivity_definition": input_sensitivity.DEFINITION, "sensitivity_set": "test",
        "sharpness_examples": len(sharpness_set[0]), "sharpness_subset_seed": cfg.seed,
        "sharpness_maxiter": cfg.sharpness_maxiter, "sharpness_start": "y=0",
        "sharpness_epsilons": ",".join(map(str, cfg.sharpness_epsilons)),
    }

    for batch_size in cfg.batch_sizes:
        n_updates = cfg.epochs * math.ceil(len(train[0]) / batch_size)

        def log_flatness(child, model, n_updates=n_updates):
            measured = {"n_updates": n_updates, **flatness(model, cfg, test[0], sharpness_set)}
            child.log_metrics(measured, step=cfg.epochs)
            ctx.report(", ".join(f"{key} {value:.6g}" for key, value in measured.items()))

        members = {}
        for replicate in ctx.replicates:
            seed = replicate.seed(cfg.seed)  # one seed per replicate: every batch size starts from the same weights
            members[replicate.name(f"bs{batch_size}")] = Member(
                seeded_model(lambda: mlp(MODEL), seed, ctx.device), seed,
                params={"widths": describe(MODEL), **measurement_params, **replicate.params},
                log_artifacts=log_flatness)
        # the replicates of one batch size train side by side: at batch 10 a step is mostly overhead
        ctx.train_together(members, train=train, eval_splits={"train": train, "test": test}, task=CLASSIFICATION,
                           epochs=cfg.epochs, batch_size=batch_size, lr=cfg.lr)
