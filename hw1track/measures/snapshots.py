"""Weight snapshots along a training run, kept as one artifact per model.

The optimisation-path study needs the whole parameter vector at several epochs,
together with the loss and accuracy the model had there. Rows are written into
one preallocated (snapshots x P) tensor, so recording costs one copy of the
weights and logging no stacking. The first layer is stored as a view into that
tensor: `torch.save` keeps the shared storage, so the file (and the loaded
dict) holds the weights once although both views are available by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from hw1track.tracking.runs import TrackedRun

ARTIFACT = "snapshots.pt"


def snapshot_epochs(epochs: int, every: int) -> list[int]:
    """Epoch 0, every `every` epochs, and the last epoch (so the path always reaches the final weights)."""
    kept = list(range(0, epochs + 1, every))
    if kept[-1] != epochs:
        kept.append(epochs)
    return kept


def first_layer_weight(model: nn.Module) -> tuple[str, int, int]:
    """Name, offset in the flattened parameter vector, and size of the first layer's weight matrix."""
    offset = 0
    for name, parameter in model.named_parameters():
        if name.endswith("weight"):
            return name, offset, parameter.numel()
        offset += parameter.numel()
    raise ValueError("the model has no weight parameter")


class WeightSnapshots:
    """An `on_epoch` hook for `fit` that keeps the parameters and metrics at chosen epochs."""

    def __init__(self, model: nn.Module, epochs: list[int]):
        self.epochs = list(epochs)
        self._row = {epoch: i for i, epoch in enumerate(self.epochs)}
        self.parameters = list(model.parameters())
        self.whole = torch.empty(len(self.epochs), sum(p.numel() for p in self.parameters), dtype=torch.float32)
        self.first_layer_name, offset, size = first_layer_weight(model)
        self.first_layer = self.whole[:, offset:offset + size]
        self.metrics: dict[str, list[float]] = {}
        self.recorded: list[int] = []

    def __call__(self, epoch: int, model: nn.Module, metrics: Mapping[str, float]) -> None:
        if epoch not in self._row:
            return
        with torch.no_grad():
            torch.cat([p.detach().reshape(-1).float().cpu() for p in self.parameters], out=self.whole[self._row[epoch]])
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append(float(value))
        self.recorded.append(epoch)

    def as_dict(self) -> dict[str, object]:
        if self.recorded != self.epochs:
            raise RuntimeError(f"snapshots recorded at epochs {self.recorded}, expected {self.epochs}")
        return {"epoch": torch.tensor(self.epochs, dtype=torch.int64),
                **{key: torch.tensor(values, dtype=torch.float64) for key, values in self.metrics.items()},
                "whole": self.whole, "first_layer": self.first_layer, "first_layer_name": self.first_layer_name}

    def log(self, run: TrackedRun) -> None:
        run.log_tensors(self.as_dict(), ARTIFACT)


def load_snapshots(path: str | Path) -> dict[str, object]:
    """What `WeightSnapshots.log` stored: `epoch`, the metrics by name, `whole` and `first_layer` (S x ...)."""
    return torch.load(path, weights_only=True)
