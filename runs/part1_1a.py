"""part1_1a: deep vs shallow networks of equal size fitting sinc and a square wave.

Three fully connected ReLU nets with (almost) the same number of parameters but
depths 7, 4 and 1 are fitted by full-batch Adam to sin(5πx)/(5πx) and to
sgn(sin(5πx)) on 1,000 points of (0, 1]. Each model is a child run with its
per-epoch MSE (`train_loss`), final weights and its predictions on the grid.
The replicates of one net train side by side as one stack (`ctx.train_together`):
a 571-parameter net's epoch is mostly per-step overhead, which a stack pays once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from hw1track.config import SWEEP, seed_setting, setting
from hw1track.study.context import Member, RunContext
from hw1track.tracking.names import TAG_STUCK
from hw1track.training.models import describe, mlp, seeded_model
from hw1track.training.targets import TARGETS, sample_target
from hw1track.training.tasks import REGRESSION

DATA = "synthetic"

# Depth varies, P does not: 571, 572 and 571 parameters.
MODELS = {
    "deep": (1, 5, 10, 10, 10, 10, 10, 5, 1),
    "middle": (1, 10, 18, 15, 4, 1),
    "shallow": (1, 190, 1),
}
# A net whose ReLUs all died outputs one constant: its predictions do not vary over x. Its loss is then
# Var(y), but a loss near Var(y) alone also catches nets still learning at a short budget (sgn at 300 epochs).
COLLAPSED_OUTPUT_STD = 1e-6  # relative to std(y); float32 rounding of a constant output stays far below it


@dataclass(frozen=True)
class Config:
    targets: tuple[str, ...] = setting(("sinc", "sgn"), choices=tuple(TARGETS), role=SWEEP)
    n_points: int = 1000
    epochs: int = 20_000
    lr: float = 1e-3
    seed: int = seed_setting()


PRESETS = {
    "full": Config(),
    "quick": Config(epochs=1500),
}


def log_predictions(child, model, x: torch.Tensor, y: torch.Tensor) -> None:
    """The fit on the grid, and whether it collapsed to a constant (tag `hw1track.stuck`)."""
    with torch.no_grad():
        prediction = model(x)
    grid = pd.DataFrame({"x": x.squeeze(1).cpu(), "y_true": y.squeeze(1).cpu(), "y_pred": prediction.squeeze(1).cpu()})
    child.log_csv(grid, "predictions.csv")
    stuck = prediction.std() <= COLLAPSED_OUTPUT_STD * y.std()
    child.set_tags({TAG_STUCK: str(bool(stuck)).lower()})


def run(cfg: Config, ctx: RunContext) -> None:
    for t, target in enumerate(cfg.targets):
        x, y = sample_target(target, cfg.n_points)
        x, y = x.to(ctx.device), y.to(ctx.device)
        for m, (name, widths) in enumerate(MODELS.items()):
            members = {}
            for replicate in ctx.replicates:
                seed = replicate.seed(cfg.seed + t * len(MODELS) + m)
                members[replicate.name(f"{target}/{name}")] = Member(
                    seeded_model(lambda: mlp(widths), seed, ctx.device), seed,
                    params={"target": target, "widths": describe(widths), "depth": len(widths) - 2,
                            **replicate.params},
                    log_artifacts=lambda child, model: log_predictions(child, model, x, y))
            ctx.train_together(members, train=(x, y), eval_splits={"train": (x, y)}, task=REGRESSION,
                               epochs=cfg.epochs, batch_size=cfg.n_points, lr=cfg.lr)
