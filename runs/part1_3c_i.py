"""part1_3c_i: flatness by interpolation between a small-batch and a large-batch solution.

One MLP 784-128-64-10 (P = 109,386) is trained twice on MNIST with Adam 1e-3
for the same number of epochs, from the same initial weights and with the same
shuffling seed, once with batch size 64 (θ₁) and once with 1000 (θ₂): the
batch size is the only difference. The weights θ(α) = (1−α)·θ₁ + α·θ₂ are then
evaluated, never trained, on the full train and test sets for α from −1 to 2
in steps of 0.05; α = 0 and α = 1 are the two trained models exactly. The curve
is the parent's artifact `interpolation.csv`, one curve per replicate (column
`replicate`), each between the two models of that replicate, which share their
seed, logged through `ctx.log_replicate_table` so that replicates trained as
separate tasks add up to one table; each trained model is a child run.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hw1track.config import PRESENTATION, SWEEP, MnistSplits, setting
from hw1track.measures.interpolation import alpha_grid, evaluate_along_line, snapshot
from hw1track.study.context import Member, RunContext
from hw1track.tracking.names import PARAM_REPLICATE
from hw1track.training.models import describe, mlp, seeded_model
from hw1track.training.tasks import CLASSIFICATION

DATA = "mnist"

MODEL = (784, 128, 64, 10)
CURVE_COLUMNS = ["alpha", "train_loss", "test_loss", "train_acc", "test_acc", PARAM_REPLICATE]


@dataclass(frozen=True)
class Config(MnistSplits):
    # each is the batch size of one model, which carries it in its params
    small_batch: int = setting(64, role=SWEEP)
    large_batch: int = setting(1000, role=SWEEP)
    epochs: int = 20
    lr: float = 1e-3
    # the interpolation grid: only the parent's curve depends on it, never a trained model
    alpha_start: float = setting(-1.0, allow_any=True, role=PRESENTATION)
    alpha_stop: float = setting(2.0, allow_any=True, role=PRESENTATION)
    alphas_per_unit: int = setting(20, role=PRESENTATION)  # α step 1/20 = 0.05


PRESETS = {
    "full": Config(),
    "quick": Config(epochs=3, train_size=6_000, test_size=2_000),
}


def run(cfg: Config, ctx: RunContext) -> None:
    train, test = ctx.mnist_splits(cfg.train_size, cfg.test_size, cfg.seed)
    splits = {"train": train, "test": test}
    endpoints = {}  # (replicate, alpha) -> the trained weights
    for alpha, batch_size in ((0, cfg.small_batch), (1, cfg.large_batch)):
        members = {}
        for replicate in ctx.replicates:
            seed = replicate.seed(cfg.seed)  # one seed per replicate: both endpoints start from the same weights
            members[replicate] = Member(seeded_model(lambda: mlp(MODEL), seed, ctx.device), seed,
                                        params={"widths": describe(MODEL), "interpolation_alpha": alpha,
                                                **replicate.params})
        # replicates of one batch size are one shape and one batch size: they train side by side
        ctx.train_together({replicate.name(f"bs{batch_size}"): member for replicate, member in members.items()},
                           train=train, eval_splits=splits, task=CLASSIFICATION, epochs=cfg.epochs,
                           batch_size=batch_size, lr=cfg.lr)
        endpoints.update({(replicate, alpha): snapshot(member.model) for replicate, member in members.items()})
    alphas = alpha_grid(cfg.alpha_start, cfg.alpha_stop, cfg.alphas_per_unit)
    rows = []
    for replicate in ctx.replicates:
        curve = evaluate_along_line(mlp(MODEL).to(ctx.device), endpoints[replicate, 0], endpoints[replicate, 1],
                                    alphas, splits, CLASSIFICATION)
        rows.extend({**row, **replicate.params} for row in curve)
    ctx.log_replicate_table("interpolation.csv", pd.DataFrame(rows, columns=CURVE_COLUMNS))
    ctx.report(f"interpolation: {len(alphas)} values of α from {alphas[0]} to {alphas[-1]}, "
               f"{len(ctx.replicates)} replicate(s)")
