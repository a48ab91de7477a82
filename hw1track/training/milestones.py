"""Training goals stated on the per-epoch metrics: when to stop, and when a threshold was first reached.

Memorisation experiments train until the training accuracy reaches a target
(epochs being only a cap), and the number of epochs that took is the result.
Size sweeps train each model until its training loss stops improving, so that a
small model is compared at its own plateau rather than after the epochs a
large one needed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

import torch
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


class LossPlateau:
    """A `stop_when` that stops a model once its training loss has levelled off and is on its level.

    Model i stops after epoch e when, with δ = `fraction` x (its `key` at epoch 0),
    its best `key` so far improved by less than δ over the last `window` epochs
    (Keras's EarlyStopping on the training loss) and epoch e's `key` is within δ
    of that best. The second condition matters because a wide net trained at a
    constant rate has the odd bad epoch, and "no progress over the window" is
    most often true right after one: without it a full part1_3b run stopped its
    widest CNN at a training loss of 0.024 against its best of 0.003, and that
    epoch's numbers would have stood for the width. The threshold is tied to
    the initial loss, not to the current one, because a large net drives its
    training loss towards zero by a steady factor per epoch: a relative rule
    would never stop it. Stateful: one instance per training, called once per
    epoch from epoch 0 (as the driver does). `stopped_epoch` holds each model's
    stopping epoch, -1 while it trains on.
    """

    def __init__(self, window: int, fraction: float, key: str = "train_loss"):
        if window < 1 or fraction < 0:
            raise ValueError(f"a plateau needs window >= 1 and fraction >= 0, not {window} and {fraction}")
        self.window = window
        self.fraction = fraction
        self.key = key
        self._epoch = -1
        self._best: deque[torch.Tensor] = deque(maxlen=window + 1)  # best loss so far, (M,), the last window + 1
        self._threshold: torch.Tensor | None = None
        self.stopped_epoch: torch.Tensor | None = None

    def __call__(self, metrics: Mapping[str, torch.Tensor]) -> torch.Tensor:
        loss = metrics[self.key].detach().double().cpu()
        self._epoch += 1
        if self._epoch == 0:
            self._threshold = self.fraction * loss.abs()
            self.stopped_epoch = torch.full(loss.shape, -1, dtype=torch.long)
            self._best.append(loss.clone())
            return torch.zeros(loss.shape, dtype=torch.bool)
        best = torch.minimum(self._best[-1], loss)
        self._best.append(best)
        if self._epoch < self.window:
            return torch.zeros(loss.shape, dtype=torch.bool)
        levelled = (self._best[0] - best < self._threshold) & (loss - best < self._threshold)
        self.stopped_epoch[levelled & (self.stopped_epoch < 0)] = self._epoch
        return levelled

    def stop_epoch(self, index: int = 0) -> int | None:
        """The epoch at which model `index` was stopped by this rule; None if it never was (the cap stopped it)."""
        if self.stopped_epoch is None or self.stopped_epoch[index] < 0:
            return None
        return int(self.stopped_epoch[index])
