"""part1_3b: number of parameters vs generalization, a CNN whose dense layer widens.

Eleven CNNs of one family, conv 8 (3x3) - ReLU - max-pool 2 - dense `width` -
ReLU - 10, differ only in the dense width, from 6 to 1,000 units: P runs from
9,564 to 1,579,090 (2.2 decades). All are trained with one recipe (Adam 1e-3,
batch 128, 8 epochs, the same data). Each child run logs `width`, `n_params`
and per-epoch train and test loss and accuracy (full-set evaluations); the
figures use each model's last epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw1track.config import SWEEP, MnistSplits, setting
from hw1track.study.context import RunContext
from hw1track.training.models import cnn, describe

DATA = "mnist"

# Spaced by a factor of about 1.67 so that P = 1,579 * width + 90 covers 10^4 to 1.6e6 evenly on a log axis.
WIDTHS = (6, 10, 17, 28, 46, 77, 128, 215, 360, 600, 1000)


@dataclass(frozen=True)
class Config(MnistSplits):
    widths: tuple[int, ...] = setting(WIDTHS, role=SWEEP)
    channels: tuple[int, ...] = (8,)
    epochs: int = 8  # about 10 min for all eleven on 2 quiet cores: one sweep epoch measured 68 s
    batch_size: int = 128
    lr: float = 1e-3


PRESETS = {
    "full": Config(),
    "quick": Config(epochs=2, train_size=2_000, test_size=2_000),
}


def run(cfg: Config, ctx: RunContext) -> None:
    ctx.train_classifiers({f"dense{width}": (lambda width=width: cnn(cfg.channels, (width,)),
                                             {"width": width, "channels": describe(cfg.channels)})
                           for width in cfg.widths}, cfg)
