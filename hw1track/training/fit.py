"""The training loop every experiment uses, and the evaluation every loop logs.

(Nets of one shape trained side by side, part1_2a's, go through
`train_together`, which draws the same minibatches from the same seeds and
evaluates and logs each net with `evaluate_and_log`.)

Data are whole tensors already on the device: a minibatch is an index into
them, so an epoch costs the model's arithmetic and little else. Every reported
number comes from a no-grad pass over the full set after the epoch, never from
a running minibatch average. Metrics go to a `MetricSink`, which batches them
so that tracking stays off the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hw1track.training.evaluation import evaluate_splits
from hw1track.training.sinks import MetricSink
from hw1track.training.tasks import Split, Task

EpochHook = Callable[[int, nn.Module, Mapping[str, float]], None]



def gradient_norm(model: nn.Module) -> torch.Tensor:
    """L2 norm of the concatenation of every parameter's gradient (one number for the whole model)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)



def evaluate_and_log(model: nn.Module, epoch: int, eval_splits: Mapping[str, Split], task: Task, sink: MetricSink,
                     on_epoch: EpochHook | None = None) -> dict[str, float]:
    """Full-set metrics at `epoch`, logged with step = epoch and handed to `on_epoch`."""
    metrics = evaluate_splits(model, eval_splits, task)
    sink.log_metrics(metrics, step=epoch)
    if on_epoch:
        on_epoch(epoch, model, metrics)
    return metrics


def fit(model: nn.Module, train: Split, *, task: Task, epochs: int, batch_size: int, lr: float, seed: int,
        eval_splits: Mapping[str, Split], sink: MetricSink, log_iterations: bool = False,
        on_epoch: EpochHook | None = None, stop_when: Callable[[Mapping[str, float]], bool] | None = None,
        optimizer: torch.optim.Optimizer | None = None, anneal_lr: bool = False, desc: str = "") -> dict[str, float]:
    """Train `model` in place and return the final full-set metrics.

    Epoch metrics are logged with step = epoch, epoch 0 being the initial weights;
    with `log_iterations`, the minibatch loss and gradient norm of every update are
    logged with step = global iteration (1-based). Training ends early after the
    first epoch whose metrics satisfy `stop_when`. Shuffling is driven by `seed`
    alone, so the same seed gives the same numbers.

    `anneal_lr` lowers the learning rate from `lr` towards 0 along a cosine over
    `epochs` (stepped once per epoch, logged as `lr`): at a constant rate the
    last few per cent of a memorisation keep being undone by the optimiser's
    own noise, while the early, fast phase is barely slowed.
    """
    x, y = train
    n = len(x)
    if any(isinstance(module, nn.Conv2d) for module in model.modules()):
        # oneDNN's NHWC convolution and pooling kernels beat its NCHW ones for these thin layers
        # (benchmarks/conv_memory_format.py). A one-channel image has the same layout either way,
        # so only the weights change layout, before the optimiser sees them.
        model.to(memory_format=torch.channels_last)
    # One fused kernel per step instead of a dozen passes over the weights: at batch 64 the update of the
    # 418k-parameter DNN was half of its step's time with foreach=True (benchmarks/vs_naive.py, W1).
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    shuffle = torch.Generator().manual_seed(seed)
    full_batch = batch_size >= n
    iteration = 0
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs) if anneal_lr else None

    metrics = evaluate_and_log(model, 0, eval_splits, task, sink, on_epoch)

    model.train()
    postfix_every = max(1, epochs // 100)
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", leave=False, disable=None, mininterval=0.5)
    for epoch in bar:
        losses: list[torch.Tensor] = []
        norms: list[torch.Tensor] = []
        order = None if full_batch else torch.randperm(n, generator=shuffle).to(x.device)
        for start in range(0, n, batch_size):
            if full_batch:
                xb, yb = x, y
            else:
                index = order[start:start + batch_size]
                xb, yb = x[index], y[index]
            loss = task.loss(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if log_iterations:
                losses.append(loss.detach())
                norms.append(gradient_norm(model))
            optimizer.step()
        if schedule:
            sink.log_metrics({"lr": schedule.get_last_lr()[0]}, step=epoch)
            schedule.step()
        first_step = iteration + 1
        iteration += (n + batch_size - 1) // batch_size
        if log_iterations:
            sink.log_series({"loss": torch.stack(losses).tolist(), "grad_norm": torch.stack(norms).tolist()},
                            first_step=first_step)
        metrics = evaluate_and_log(model, epoch, eval_splits, task, sink, on_epoch)
        if epoch % postfix_every == 0:  # formatting every epoch would cost more than a tiny model's step
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        if stop_when and stop_when(metrics):
            break
    bar.close()
    return metrics
