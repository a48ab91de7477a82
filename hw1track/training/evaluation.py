"""Full-set, no-grad evaluation in eval mode: the only source of every reported number.

Every reported number comes from a pass over the whole split after an epoch,
never from a running minibatch average.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from hw1track.training.tasks import Split, Task

EVAL_CHUNK = 512  # examples per no-grad forward: a chunk's conv activations stay in cache (benchmarks/eval_chunk.py)


# Layers whose forward never reads `training` (exact types: a subclass may read it).
MODE_FREE_LAYERS = frozenset({
    nn.Sequential, nn.Identity, nn.Flatten, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU,
    nn.GELU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Softmax, nn.LogSoftmax, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AdaptiveAvgPool2d,
})


def mode_free(modules: Iterable[nn.Module]) -> bool:
    """True when every module is one of `MODE_FREE_LAYERS`: train and eval mode compute the same."""
    return all(type(module) in MODE_FREE_LAYERS for module in modules)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` computing as in eval mode for the body; afterwards every module is back in its own mode.

    Dropout and batch norm behave differently in the two modes, and a reported
    number must be the model's deterministic eval-mode output. A model built
    only of `MODE_FREE_LAYERS` computes the same in both, so its flags are left
    alone: switching walks every module through `nn.Module.train`, 74 µs a
    switch and back for part1_1a's deep net, whose whole epoch takes about
    1.5 ms, against 15 µs to check.
    """
    modules = list(model.modules())
    if mode_free(modules):
        yield model
        return
    previous = [module.training for module in modules]
    model.train(False)
    try:
        yield model
    finally:
        for module, was_training in zip(modules, previous):
            module.training = was_training


def split_metrics(model: nn.Module, split: Split, task: Task) -> dict[str, torch.Tensor]:
    """Mean loss (and accuracy for classification) over the whole split, as float64 scalars on its device.

    They stay tensors so that a training loop reads them back once per epoch,
    not once per number.
    """
    with eval_mode(model):
        return _measure(model, split, task)


@torch.no_grad()
def _measure(model: nn.Module, split: Split, task: Task) -> dict[str, torch.Tensor]:
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
    result = {"loss": loss_sum / n_values}
    if task.classification:
        result["acc"] = correct.double() / len(x)
    return result


def splits_metrics(model: nn.Module, splits: Mapping[str, Split], task: Task) -> dict[str, torch.Tensor]:
    """{'train_loss': ..., 'test_acc': ...} for every named split, as float64 scalars."""
    with eval_mode(model):  # once for all splits
        return _measure_splits(model, splits, task)


def _measure_splits(model: nn.Module, splits: Mapping[str, Split], task: Task) -> dict[str, torch.Tensor]:
    return {f"{name}_{key}": value for name, split in splits.items()
            for key, value in _measure(model, split, task).items()}


def evaluate(model: nn.Module, split: Split, task: Task) -> dict[str, float]:
    """`split_metrics` as Python floats."""
    return {key: value.item() for key, value in split_metrics(model, split, task).items()}


def evaluate_splits(model: nn.Module, splits: Mapping[str, Split], task: Task) -> dict[str, float]:
    """`splits_metrics` as Python floats."""
    return {key: value.item() for key, value in splits_metrics(model, splits, task).items()}


class Evaluator:
    """One model's full-set metrics on fixed splits, taken after every epoch of its training.

    Whether the mode must be switched is decided once: the layers of a model
    do not change while it trains, and the check is a walk of every module.
    """

    def __init__(self, model: nn.Module, splits: Mapping[str, Split], task: Task):
        self.model, self.splits, self.task = model, splits, task
        self._switch = not mode_free(model.modules())

    def __call__(self) -> dict[str, torch.Tensor]:
        """`splits_metrics` of the model at its current weights."""
        if self._switch:
            return splits_metrics(self.model, self.splits, self.task)
        return _measure_splits(self.model, self.splits, self.task)
