"""Labels with the images' information removed, for the memorisation experiment.

Shuffling the existing labels (rather than drawing new ones uniformly) keeps the
class counts exactly, so the only thing that changes is which image carries
which label; a network that fits them can only have memorised.
"""

from __future__ import annotations

import torch


def permuted_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """`labels` in an order fixed by `seed`; the input is left untouched."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return labels[order.to(labels.device)]
