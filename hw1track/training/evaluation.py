"""Full-set, no-grad evaluation in eval mode: the only source of every reported number.

Every reported number comes from a pass over the whole split after an epoch,
never from a running minibatch average.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from hw1track.training.tasks import Split, Task

EVAL_CHUNK = 512  # examples per no-grad forward: a chunk's conv activations stay in cache (benchmarks/eval_chunk.py)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, task: Task) -> dict[str, float]:
    """Mean loss (and accuracy for classification) over the whole split.

    The models here have no dropout or batch norm, so train and eval mode agree;
    not toggling them saves a recursive walk of the model per call, which is a
    quarter of a tiny network's epoch.
    """
    x, y = split
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), EVAL_CHUNK):
        xb, yb = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
        out = model(xb)
        loss_sum += task.loss(out, yb, reduction="sum").double()
        if task.classification:
            correct += (out.argmax(dim=1) == yb).sum()
    n_values = len(x) if task.classification else y.numel()
    result = {"loss": (loss_sum / n_values).item()}
    if task.classification:
        result["acc"] = correct.item() / len(x)
    return result


def evaluate_splits(model: nn.Module, splits: Mapping[str, Split], task: Task) -> dict[str, float]:
    """{'train_loss': ..., 'test_acc': ...} for every named split."""
    metrics = {}
    for name, split in splits.items():
        for key, value in evaluate(model, split, task).items():
            metrics[f"{name}_{key}"] = value
    return metrics


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the body, then back in the mode it was in.

    Dropout and batch norm behave differently in the two modes, and a reported
    number must be the model's deterministic eval-mode output.
    """
    was_training = model.training
    model.train(False)
    try:
        yield model
    finally:
        model.train(was_training)
