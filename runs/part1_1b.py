"""part1_1b: deep vs shallow CNNs of equal size on MNIST.

Three CNNs with 1, 2 and 3 convolution blocks and P within 1 % of each other
(25,346, 25,108 and 25,333) are trained with the same recipe: Adam 1e-3,
batch 128. Each logs per-epoch train and test loss and accuracy (full-set
evaluations) and its final weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw1track.config import MnistSplits
from hw1track.study.context import RunContext
from hw1track.training.models import cnn, describe

DATA = "mnist"

# (conv channels, dense hidden widths): the dense head absorbs the P of the extra convolutions.
MODELS = {
    "cnn1": ((16,), (8,)),
    "cnn2": ((8, 16), (30,)),
    "cnn3": ((8, 16, 32), (65,)),
}


@dataclass(frozen=True)
class Config(MnistSplits):
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3


PRESETS = {
    "full": Config(),
    "quick": Config(epochs=3, train_size=6_000, test_size=2_000),
}


def run(cfg: Config, ctx: RunContext) -> None:
    ctx.train_classifiers({name: (lambda channels=channels, dense=dense: cnn(channels, dense),
                                  {"conv_layers": len(channels), "channels": describe(channels),
                                   "dense": describe(dense)})
                           for name, (channels, dense) in MODELS.items()}, cfg)
