"""part1_2b: the gradient norm at every iteration, next to the loss.

Two models log `loss` and `grad_norm` (the L2 norm of the concatenated gradient
of all parameters) at every update, with step = iteration:

- the DNN 1-500-1 (P = 1,501) fitting sinc on 1,000 points of (0, 1] by
  full-batch Adam 1e-3 for 20,000 iterations. Full batch, so that each logged
  norm is the gradient of the training loss itself rather than of a noisy
  minibatch estimate (the quantity part1_2c drives to zero). 20,000 iterations,
  as in part1_1a, because the MSE keeps falling for ~10^4 of them (from 1e-1 to
  about 1e-4), while from about iteration 1,400 on the gradient norm no longer
  shrinks but rises in recurring Adam spikes: the figure needs the whole range.
- the MNIST DNN of part1_2a (784-500-50-10, P = 418,060), Adam 1e-3, batch 128,
  5 epochs (2,345 iterations): the minibatch view of the same quantities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hw1track.config import MnistSplits
from hw1track.study.context import Member, RunContext
from hw1track.training.models import MNIST_DNN_WIDTHS as MNIST_WIDTHS
from hw1track.training.models import describe, mlp, seeded_model
from hw1track.training.targets import sample_target
from hw1track.training.tasks import CLASSIFICATION, REGRESSION

DATA = "mnist"

SINC_WIDTHS = (1, 500, 1)


@dataclass(frozen=True)
class Config(MnistSplits):
    sinc_points: int = 1000
    sinc_iterations: int = 20_000
    mnist_epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3


PRESETS = {
    "full": Config(),
    "quick": Config(sinc_iterations=2_000, mnist_epochs=2, train_size=10_000, test_size=2_000),
}


def run(cfg: Config, ctx: RunContext) -> None:
    """The replicates of each model train side by side as one stack, each logging its own iterations."""
    x, y = sample_target("sinc", cfg.sinc_points)
    x, y = x.to(ctx.device), y.to(ctx.device)
    _train_replicates(ctx, f"sinc/{describe(SINC_WIDTHS)}", SINC_WIDTHS, cfg.seed, train=(x, y),
                      eval_splits={"train": (x, y)}, task=REGRESSION, epochs=cfg.sinc_iterations,
                      batch_size=cfg.sinc_points, lr=cfg.lr,
                      params={"data": "sinc", "target": "sinc", "widths": describe(SINC_WIDTHS),
                              "iterations": cfg.sinc_iterations})

    train, test = ctx.mnist_splits(cfg.train_size, cfg.test_size, cfg.seed)
    _train_replicates(ctx, f"mnist/{describe(MNIST_WIDTHS)}", MNIST_WIDTHS, cfg.seed + 1, train=train,
                      eval_splits={"train": train, "test": test}, task=CLASSIFICATION, epochs=cfg.mnist_epochs,
                      batch_size=cfg.batch_size, lr=cfg.lr,
                      params={"data": "mnist", "widths": describe(MNIST_WIDTHS),
                              "iterations": cfg.mnist_epochs * math.ceil(len(train[0]) / cfg.batch_size)})


def _train_replicates(ctx: RunContext, name: str, widths: tuple[int, ...], base_seed: int, *, params: dict,
                      **recipe) -> None:
    members = {}
    for replicate in ctx.replicates:
        seed = replicate.seed(base_seed)
        members[replicate.name(name)] = Member(seeded_model(lambda: mlp(widths), seed, ctx.device), seed,
                                               params={**params, **replicate.params})
    ctx.train_together(members, log_iterations=True, **recipe)
