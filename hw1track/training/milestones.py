"""Training goals stated on the per-epoch metrics: when to stop, and when a threshold was first reached.

Memorisation experiments train until the training accuracy reaches a target
(epochs being only a cap), and the number of epochs that took is the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn


def metric_reaches(key: str, threshold: float) -> Callable[[Mapping[str, float]], bool]:
    """A `stop_when` for `fit`: true once the epoch's `key` is at least `threshold` (e.g. train_acc >= 0.99)."""
    return lambda metrics: metrics[key] >= threshold


class FirstEpochReaching:
    """Epoch hook remembering the first epoch whose `key` is at least `threshold`; `epoch` is None until then."""

    def __init__(self, key: str, threshold: float):
        self.key = key
        self.threshold = threshold
        self.epoch: int | None = None

    def __call__(self, epoch: int, model: nn.Module, metrics: Mapping[str, float]) -> None:
        if self.epoch is None and metrics[self.key] >= self.threshold:
            self.epoch = epoch
