"""What a model is trained on and for: a split of data, and the loss with whether accuracy means anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Task:
    """What is minimised and whether accuracy means anything."""

    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    classification: bool


REGRESSION = Task(F.mse_loss, classification=False)
CLASSIFICATION = Task(F.cross_entropy, classification=True)
