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


@torch.no_grad()
def split_metrics(model: nn.Module, split: Split, task: Task) -> dict[str, torch.Tensor]:
    """Mean loss (and accuracy for classification) over the whole split, as float64 scalars on its device.

    They stay tensors so that a training loop reads them back once per epoch,
    not once per number.
    """
    x, y = split
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with eval_mode(model):
        for start in range(0, len(x), EVAL_CHUNK):
            xb, yb = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
            out = model(xb)
            loss_sum += task.loss(out, yb, reduction="sum").double()
            if task.classification:
                correct += (out.argmax(dim=1) == yb).sum()
    n_values = len(x) if task.classification else y.numel()
    result = {"loss": loss_sum / n_values}
    if task.classification:
        result["acc"] = correct.double() / len(x)
    return result


def splits_metrics(model: nn.Module, splits: Mapping[str, Split], task: Task) -> dict[str, torch.Tensor]:
    """{'train_loss': ..., 'test_acc': ...} for every named split, as float64 scalars."""
    with eval_mode(model):  # once for all splits: a mode switch walks every module
        return {f"{name}_{key}": value for name, split in splits.items()
                for key, value in split_metrics(model, split, task).items()}


def evaluate(model: nn.Module, split: Split, task: Task) -> dict[str, float]:
    """`split_metrics` as Python floats."""
    return {key: value.item() for key, value in split_metrics(model, split, task).items()}


def evaluate_splits(model: nn.Module, splits: Mapping[str, Split], task: Task) -> dict[str, float]:
    """`splits_metrics` as Python floats."""
    return {key: value.item() for key, value in splits_metrics(model, splits, task).items()}
