"""Same-shape MLPs trained side by side, each exactly as `train.fit` would train it alone.

Net i gets the initial weights it was built with, the minibatch order of
`seeds[i]` (the same permutations `fit` draws from that seed), its own Adam
state, and its own per-epoch metrics in its own sink; only the arithmetic is
shared, as one `MlpStack` step for all of them (see `mlp_stack` for why that
is faster). Results match separate `fit` calls up to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from hw1track.training.mlp_stack import MlpStack
from hw1track.training.fit import evaluate_and_log
from hw1track.training.fit import EpochHook
from hw1track.training.sinks import MetricSink
from hw1track.training.tasks import Split, Task


def stacked_step(stack: MlpStack, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 task: Task) -> None:
    """One update of every net, net i on its minibatch x[i], y[i]."""
    per_example = task.loss(stack.outputs(x).flatten(0, 1), y.flatten(0, 1), reduction="none")
    losses = per_example.view(len(stack), -1).mean(dim=1)
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()  # each net's gradient is that of its own loss: the nets share nothing
    optimizer.step()


def fit_together(models: Sequence[nn.Module], train: Split, *, task: Task, epochs: int, batch_size: int, lr: float,
                 seeds: Sequence[int], eval_splits: Mapping[str, Split], sinks: Sequence[MetricSink],
                 on_epoch: Sequence[EpochHook | None] | None = None, desc: str = "") -> list[dict[str, float]]:
    """Train `models` (nets built by `models.mlp`, one shape) in place; returns each one's final metrics.

    The arguments mean what they mean for `fit`, one per model where they are
    sequences. Metrics are logged with step = epoch, 0 being the initial weights.
    """
    if not len(models) == len(seeds) == len(sinks):
        raise ValueError("fit_together needs one seed and one sink per model")
    hooks = list(on_epoch) if on_epoch is not None else [None] * len(models)
    x, y = train
    n = len(x)
    stack = MlpStack(models)
    optimizer = torch.optim.Adam(stack.parameters(), lr=lr, fused=True)
    shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
    everyone = torch.arange(n, device=x.device).expand(len(models), n)

    def after_epoch(epoch: int) -> list[dict[str, float]]:
        stack.copy_to(models)
        return [evaluate_and_log(model, epoch, eval_splits, task, sink, hook)
                for model, sink, hook in zip(models, sinks, hooks)]

    finals = after_epoch(0)
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", leave=False, disable=None, mininterval=0.5)
    for epoch in bar:
        if batch_size >= n:
            orders = everyone
        else:
            orders = torch.stack([torch.randperm(n, generator=shuffle) for shuffle in shuffles]).to(x.device)
        for start in range(0, n, batch_size):
            index = orders[:, start:start + batch_size]
            stacked_step(stack, optimizer, x[index], y[index], task)
        finals = after_epoch(epoch)
        bar.set_postfix({key: f"{sum(m[key] for m in finals) / len(finals):.4g}" for key in finals[0]},
                        refresh=False)
    bar.close()
    return finals
