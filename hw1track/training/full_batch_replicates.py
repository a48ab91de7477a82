"""Same-shape MLPs under the MSE, each trained on the whole set in one batch, as one hand-written stack.

part1_1a's and part1_2b's sinc nets take tens of thousands of full-batch
steps of a few hundred parameters: a step is mostly per-kernel and autograd
overhead, which `mlp_stack.MlpStack` still pays (an autograd graph, a fused
Adam over six tensors, a separate no-grad pass per net for the epoch's
`train_loss`). Here the M nets are one `stacks.DenseReluStack` with its
passes written out, and one pass per iteration does all the work: the loss
at the current weights is both the epoch's `train_loss` and the next update's
per-iteration `loss`, and its gradient is that update's. The update is the
fused Adam kernel `fit`'s optimiser runs, over each net's row of θ with its
own step count, so that a net's Adam arithmetic is `fit`'s to the bit and
what remains different is the rounding of the forward and backward passes.

`fit_full_batch_together` takes `mlp_stack.fit_together`'s arguments and
logs what `fit` logs for each net (tested against separate `fit` calls).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hw1track.training.driver import EpochHook, Metrics, StopRule, drive
from hw1track.training.models import mlp_layers
from hw1track.training.sinks import MetricSink
from hw1track.training.stacks import DenseReluStack
from hw1track.training.tasks import Split, Task


def trains_full_batch(models: Sequence[nn.Module], train: Split, task: Task, batch_size: int) -> bool:
    """Whether `fit_full_batch_together` can train `models`: `models.mlp` nets of one shape and one dtype,
    every update on the whole training set, the MSE.

    Anything else (minibatches, another loss or architecture) goes to `mlp_stack.fit_together`.
    """
    if batch_size < len(train[0]) or task.classification or task.loss is not F.mse_loss:
        return False
    try:
        shapes = {(tuple(layer.weight.shape for layer in mlp_layers(model)), next(model.parameters()).dtype)
                  for model in models}
    except ValueError:
        return False
    return len(shapes) == 1


class RowwiseAdam(torch.optim.Optimizer):
    """torch.optim.Adam(fused=True), `fit`'s optimiser, applied to each row of an (M, P) θ with its own step count.

    Rows are handed to the fused kernel as separate tensors, as `fit` hands it
    a net's parameters, so each row's update is the one `fit` makes, rounding
    included; rows not in `rows` are left untouched, moments and step count
    too, so a net stopped early is one that never took the remaining steps.
    It is an `Optimizer` so that the driver's learning-rate schedule sets its
    rate like any other's; it updates through `update`, not `step`, which
    torch wraps in a profiler record.
    """

    def __init__(self, theta: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__([theta], {"lr": lr})
        self.betas, self.eps = betas, eps
        self.theta = theta.detach()  # the same storage, updated in place outside autograd
        self.exp_avg = torch.zeros_like(self.theta)
        self.exp_avg_sq = torch.zeros_like(self.theta)
        # one float32 step count per row, as the fused optimiser keeps per parameter
        self.steps = torch.zeros(len(theta), dtype=torch.float32, device=theta.device)
        self.rows(torch.arange(len(theta)))

    def step(self, closure: None = None) -> None:  # type: ignore[override]
        raise TypeError("RowwiseAdam takes the stack's gradient: call update(grad)")

    def rows(self, rows: torch.Tensor) -> None:
        """Update only the rows `rows` from now on."""
        self._rows = rows.tolist()
        self._state = [[tensor[i] for i in self._rows] for tensor in (self.theta, self.exp_avg, self.exp_avg_sq)]
        self._steps = [self.steps[i] for i in self._rows]

    @torch.no_grad()
    def update(self, grad: torch.Tensor) -> None:
        """One Adam step of every updated row along its row of `grad` (M, P)."""
        theta, exp_avg, exp_avg_sq = self._state
        beta1, beta2 = self.betas
        torch._foreach_add_(self._steps, 1)
        self._opt_called = True  # what torch's step records, so that a learning-rate schedule knows a step was taken
        torch._fused_adam_(theta, [grad[i] for i in self._rows], exp_avg, exp_avg_sq, [], self._steps,
                           lr=self.param_groups[0]["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0, eps=self.eps,
                           amsgrad=False, maximize=False)


class FullBatchMlps:
    """Same-shape MLPs trained on the whole set as the driver's learner: an epoch is one update of every running net.

    Evaluating at the current weights takes the loss and its gradient in one
    pass; the update that follows uses that gradient, and reports that loss
    and the gradient's norm as its per-iteration record, which is exactly
    what `fit` records for a full-batch update (its loss and gradient at the
    weights it starts from).
    """

    def __init__(self, models: Sequence[nn.Module], train: Split, eval_splits: Mapping[str, Split], lr: float):
        self.models = list(models)
        self.x, self.y = train
        self.splits = dict(eval_splits)
        self.stack = DenseReluStack(self.models)
        self.optimizer = RowwiseAdam(self.stack.theta, lr=lr)
        self.active = torch.ones(len(self.models), dtype=torch.bool)
        self._losses = self._gradients = torch.empty(0)

    def __len__(self) -> int:
        return len(self.models)

    def train_epoch(self, orders: torch.Tensor | None, record: bool) -> Metrics | None:
        losses, gradients = self._losses, self._gradients
        self.optimizer.update(gradients)
        if not record:
            return None
        return {"loss": losses.unsqueeze(0), "grad_norm": gradients.norm(dim=1).unsqueeze(0)}

    def evaluate(self) -> Metrics:
        self._losses, self._gradients = self.stack.losses_and_gradients(self.x, self.y)
        metrics = {}
        for name, (x, y) in self.splits.items():
            if x is self.x and y is self.y:
                losses = self._losses
            else:
                with torch.no_grad():
                    losses = (self.stack.outputs(x) - y).pow(2).flatten(1).mean(dim=1)
            metrics[f"{name}_loss"] = losses.double()  # `fit` reports float64 numbers
        return metrics

    @torch.no_grad()
    def model(self, index: int) -> nn.Module:
        """Net `index` with its current weights written into it (a hook reads the weights from the module)."""
        model = self.models[index]
        values = self.stack.layout.unflatten(self.optimizer.theta[index]).values()
        for parameter, value in zip(model.parameters(), values):
            parameter.copy_(value)
        return model

    def stop(self, stopped: torch.Tensor) -> None:
        self.active &= ~stopped.cpu()
        self.optimizer.rows(self.active.nonzero().flatten())


def fit_full_batch_together(models: Sequence[nn.Module], train: Split, *, task: Task, epochs: int, batch_size: int,
                            lr: float, seeds: Sequence[int], eval_splits: Mapping[str, Split],
                            sinks: Sequence[MetricSink], on_epoch: Sequence[EpochHook | None] | None = None,
                            stop_when: StopRule | None = None, log_iterations: bool = False, anneal_lr: bool = False,
                            evaluate_at: Collection[int] | None = None, desc: str = "") -> list[dict[str, float]]:
    """Train `models` in place, as `mlp_stack.fit_together` would, when `trains_full_batch` says this path can.

    `seeds` only have to be given: a full-batch update draws nothing at random.
    """
    if not len(models) == len(seeds) == len(sinks):
        raise ValueError("fit_full_batch_together needs one seed and one sink per model")
    if not trains_full_batch(models, train, task, batch_size):
        raise ValueError("fit_full_batch_together trains same-shape models.mlp nets on the MSE, full batch only")
    learner = FullBatchMlps(models, train, eval_splits, lr)
    finals = drive(learner, epochs=epochs, device=train[0].device, sinks=sinks, hooks=on_epoch, stop_when=stop_when,
                   log_iterations=log_iterations, anneal_lr=anneal_lr, evaluate_at=evaluate_at, desc=desc)
    for index in range(len(models)):
        learner.model(index)
    return finals
