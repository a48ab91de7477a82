"""The one epoch loop every training path runs: a single model, MLPs side by side, or a full-batch stack.

What differs between those paths is only how an epoch's updates are made and
how M models are evaluated, so that is all a `Learner` supplies. Everything a
change to the study would otherwise have to repeat lives here once:

- seeded shuffles: model i's minibatch order comes from its own seed alone, the
  same permutations whichever path trains it;
- full-set evaluation at epoch 0 (the initial weights) and after every epoch
  (or the epochs of `evaluate_at`, the last always among them), logged with
  step = epoch and handed to each model's hook;
- per-iteration records (`log_iterations`), logged with step = global iteration;
- a cosine learning-rate schedule (`anneal_lr`), logged as `lr`;
- `stop_when`: a model stops after the first epoch whose metrics satisfy it
  (epoch 0 included: a model already at its goal is not trained),
  and is neither trained nor logged after that while the others go on;
- one progress bar.

Metrics travel as a dict of (M,) tensors, so that a stack of a hundred models
is checked and recorded without a host round trip per model; they become
Python floats only where a sink or hook needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from hw1track.training.sinks import MetricSink

Metrics = Mapping[str, torch.Tensor]  # key -> (M,) values, one per model
EpochHook = Callable[[int, nn.Module, Mapping[str, float]], None]  # (epoch, model i, model i's metrics)
StopRule = Callable[[Metrics], torch.Tensor]  # (M,) bool: which models are done
Observer = Callable[[int, Metrics], None]  # sees every epoch's metrics of all M models, as tensors


class Learner(Protocol):
    """M models as the driver trains them; M = 1 for a single model."""

    optimizer: torch.optim.Optimizer

    def __len__(self) -> int: ...

    def train_epoch(self, orders: torch.Tensor | None, record: bool) -> Metrics | None:
        """One epoch of updates, model i on the minibatches cut from `orders[i]` (None: full batch).

        With `record`, returns per-update records: key -> (updates, M).
        """

    def evaluate(self) -> Metrics:
        """Full-set metrics of every model at its current weights (a stopped model's may be stale)."""

    def model(self, index: int) -> nn.Module:
        """Model `index` as an nn.Module holding its current weights, for hooks."""

    def stop(self, stopped: torch.Tensor) -> None:
        """Freeze the models flagged in `stopped` (M,): later epochs leave their weights untouched."""


class Shuffles:
    """Each model's minibatch order, drawn from its own seed: the same permutations `fit` draws alone."""

    def __init__(self, seeds: Sequence[int], n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size
        self.full_batch = batch_size >= n
        self.updates_per_epoch = (n + batch_size - 1) // batch_size
        self._generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def next_epoch(self, device: torch.device) -> torch.Tensor | None:
        """(M, n) permutations for the next epoch, or None when every update sees the whole set."""
        if self.full_batch:
            return None
        return torch.stack([torch.randperm(self.n, generator=g) for g in self._generators]).to(device)


def _as_floats(metrics: Metrics) -> dict[str, list[float]]:
    return {key: values.tolist() for key, values in metrics.items()}


def drive(learner: Learner, *, epochs: int, shuffles: Shuffles | None = None, device: torch.device | str = "cpu",
          sinks: Sequence[MetricSink] | None = None, hooks: Sequence[EpochHook | None] | None = None,
          observe: Observer | None = None, stop_when: StopRule | None = None, log_iterations: bool = False,
          anneal_lr: bool = False, evaluate_at: Collection[int] | None = None,
          desc: str = "") -> list[dict[str, float]]:
    """Train `learner` for up to `epochs` epochs; returns each model's final full-set metrics.

    `sinks[i]` and `hooks[i]` belong to model i. `anneal_lr` lowers the rate from
    its initial value towards 0 along a cosine over `epochs`, stepped once per
    epoch: at a constant rate the last few per cent of a memorisation keep
    being undone by the optimiser's own noise, while the early phase is barely slowed.
    `evaluate_at` names the epochs after which the models are evaluated (and
    logged, and their hooks called), besides epoch 0 and the last: a model
    trained for 150 quick epochs need not pay a full-set pass after each. A
    stopping rule reads every epoch, so it cannot be combined with it.
    """
    m = len(learner)
    if sinks is not None and len(sinks) != m or hooks is not None and len(hooks) != m:
        raise ValueError(f"drive needs one sink and one hook per model ({m})")
    if evaluate_at is not None and stop_when is not None:
        raise ValueError("a stopping rule reads every epoch's metrics: it cannot be combined with evaluate_at")
    evaluated = set(range(epochs + 1)) if evaluate_at is None else {0, epochs, *evaluate_at}
    active = torch.ones(m, dtype=torch.bool)
    last: dict[str, torch.Tensor] = {}  # the newest epoch's metrics
    at_stop: dict[str, torch.Tensor] = {}  # a stopped model's metrics at the epoch it stopped
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(learner.optimizer, T_max=epochs) if anneal_lr else None
    needs_floats = sinks is not None or (hooks is not None and any(hooks))
    postfix_every = max(1, epochs // 100)
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", leave=False, disable=None, mininterval=0.5)

    def after_epoch(epoch: int) -> bool:
        """Log, hand on and check the epoch's metrics; False once every model has stopped."""
        metrics = learner.evaluate()
        last.update(metrics)
        if observe is not None:
            observe(epoch, metrics)
        if needs_floats:
            listed = _as_floats(metrics)
            for i in running:
                own = {key: values[i] for key, values in listed.items()}
                if sinks is not None:
                    sinks[i].log_metrics(own, step=epoch)
                if hooks is not None and hooks[i] is not None:
                    hooks[i](epoch, learner.model(i), own)
        if epoch % postfix_every == 0:  # formatting every epoch would cost more than a tiny model's step
            bar.set_postfix({key: f"{values.double().mean().item():.4g}" for key, values in metrics.items()},
                            refresh=False)
        if stop_when is None:
            return True
        stopped = stop_when(metrics).cpu() & active
        if bool(stopped.any()):
            for key, values in metrics.items():
                at_stop.setdefault(key, values.clone())[stopped.to(values.device)] = values[stopped.to(values.device)]
            learner.stop(stopped)
            active.logical_and_(~stopped)
            running[:] = active.nonzero().flatten().tolist()
        return bool(running)

    running = list(range(m))  # the models not stopped yet, as a list: read every epoch, changed rarely
    iteration = 0
    going = after_epoch(0)
    for epoch in bar:
        if not going:
            break
        records = learner.train_epoch(shuffles.next_epoch(device) if shuffles else None, log_iterations)
        if schedule is not None:
            if sinks is not None:
                for i in running:
                    sinks[i].log_metrics({"lr": schedule.get_last_lr()[0]}, step=epoch)
            schedule.step()
        first_step = iteration + 1
        iteration += shuffles.updates_per_epoch if shuffles else 1
        if records is not None and sinks is not None:
            series = {key: values.t().tolist() for key, values in records.items()}
            for i in running:
                sinks[i].log_series({key: rows[i] for key, rows in series.items()}, first_step=first_step)
        if epoch in evaluated:
            going = after_epoch(epoch)
    bar.close()
    finals = {key: torch.where(active.to(values.device), values, at_stop[key]) if key in at_stop else values
              for key, values in last.items()}
    listed = _as_floats(finals)
    return [{key: values[i] for key, values in listed.items()} for i in range(m)]
