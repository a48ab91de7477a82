"""M ReLU nets of one shape as one stack of layers, each net fed its own minibatch.

Trained one at a time, part1_2a's DNN spends more of a step on autograd,
dispatch and the optimiser's Python than on its matrix products. Stacked, a
layer of all M nets is one `baddbmm` forward and two `bmm` backward, and Adam
is one fused call over six tensors, so that overhead is paid once per step
instead of M times (benchmarks/vs_naive.py, W1). Weights are kept transposed,
(M, in, out), so that every product reads its operands as they lie in memory,
and as separate leaves per layer: views into one (M, P) tensor would make
autograd concatenate a gradient of M·P floats every step.

`fit_together` trains such nets through the epoch driver, each exactly as
`fit` would train it alone: its initial weights, the minibatch order of its
own seed, its own Adam state and its own metrics; results match separate `fit`
calls up to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn

from hw1track.training.driver import EpochHook, Metrics, Shuffles, StopRule, drive
from hw1track.training.evaluation import Evaluator
from hw1track.training.models import mlp_layers
from hw1track.training.sinks import MetricSink
from hw1track.training.tasks import Split, Task


class MlpStack:
    """Nets built by `models.mlp`, all of one shape, as stacked per-layer tensors that autograd trains."""

    def __init__(self, models: Sequence[nn.Module]):
        layers = [mlp_layers(model) for model in models]
        shapes = {tuple(layer.weight.shape for layer in net) for net in layers}
        if len(shapes) != 1:
            raise ValueError(f"the nets of a stack must have one shape, got {sorted(shapes)}")
        self.weights = [torch.stack([net[k].weight.detach().t() for net in layers]).contiguous().requires_grad_()
                        for k in range(len(layers[0]))]
        self.biases = [torch.stack([net[k].bias.detach() for net in layers]).unsqueeze(1).contiguous().requires_grad_()
                       for k in range(len(layers[0]))]

    def __len__(self) -> int:
        return len(self.weights[0])

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Net i's output on x[i]: x is (M, batch, *input shape), the result (M, batch, outputs)."""
        h = x.flatten(2)
        for depth, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(bias, h, weight)
            if depth < len(self.weights) - 1:
                h = h.relu()
        return h

    @torch.no_grad()
    def copy_to(self, models: Sequence[nn.Module]) -> None:
        """Write the stack's current weights into the nets it was built from (for evaluation and saving)."""
        for index, model in enumerate(models):
            for layer, weight, bias in zip(mlp_layers(model), self.weights, self.biases):
                layer.weight.copy_(weight[index].t())
                layer.bias.copy_(bias[index, 0])

    @torch.no_grad()
    def keep(self, kept: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Drop every net not flagged in `kept` from the stack, carrying the others' Adam state along.

        The optimiser keeps its identity (a learning-rate schedule holds on to
        it); only its parameter tensors and their state are replaced by the kept rows.
        """
        group = optimizer.param_groups[0]
        replaced = []
        for old in group["params"]:
            new = old.detach()[kept].clone().requires_grad_()
            state = optimizer.state.pop(old, {})
            # each tensor keeps its own step count; the moments keep the kept nets' rows
            optimizer.state[new] = {key: value if key == "step" else value[kept].clone()
                                    for key, value in state.items()}
            replaced.append(new)
        group["params"] = replaced
        layers = len(self.weights)
        self.weights, self.biases = replaced[:layers], replaced[layers:]


def stacked_step(stack: MlpStack, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 task: Task) -> torch.Tensor:
    """One update of every net, net i on its minibatch x[i], y[i]; returns the nets' (M,) minibatch losses."""
    per_example = task.loss(stack.outputs(x).flatten(0, 1), y.flatten(0, 1), reduction="none")
    losses = per_example.view(len(stack), -1).mean(dim=1)
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()  # each net's gradient is that of its own loss: the nets share nothing
    optimizer.step()
    return losses.detach()


class StackedMlps:
    """Same-shape `models.mlp` nets as one learner: one `MlpStack` step trains all the nets still running."""

    def __init__(self, models: Sequence[nn.Module], train: Split, task: Task, eval_splits: Mapping[str, Split],
                 lr: float, batch_size: int):
        self.models, self.task, self.batch_size = list(models), task, batch_size
        self.evaluators = [Evaluator(model, eval_splits, task) for model in self.models]
        self.x, self.y = train
        self.stack = MlpStack(self.models)
        self.optimizer = torch.optim.Adam(self.stack.parameters(), lr=lr, fused=True)
        self.running = torch.arange(len(self.models))  # which nets the stack's rows are
        self._last: Metrics | None = None

    def __len__(self) -> int:
        return len(self.models)

    def train_epoch(self, orders: torch.Tensor | None, record: bool) -> Metrics | None:
        x, y, n = self.x, self.y, len(self.x)
        if orders is None:
            orders = torch.arange(n, device=x.device).expand(len(self.models), n)
        orders = orders[self.running.to(orders.device)]
        losses, norms = [], []
        for start in range(0, n, self.batch_size):
            index = orders[:, start:start + self.batch_size]
            losses.append(stacked_step(self.stack, self.optimizer, x[index], y[index], self.task))
            if record:
                squared = sum(p.grad.flatten(1).pow(2).sum(dim=1) for p in self.stack.parameters())
                norms.append(squared.sqrt())
        self.stack.copy_to([self.models[i] for i in self.running.tolist()])
        if not record:
            return None
        return {key: self._widen(torch.stack(rows)) for key, rows in (("loss", losses), ("grad_norm", norms))}

    def _widen(self, rows: torch.Tensor) -> torch.Tensor:
        """(updates, running) records as (updates, M), NaN for the nets that have stopped."""
        wide = rows.new_full((len(rows), len(self.models)), float("nan"))
        wide[:, self.running.to(rows.device)] = rows
        return wide

    def evaluate(self) -> Metrics:
        measured = [self.evaluators[i]() for i in self.running.tolist()]
        fresh = {key: torch.stack([m[key] for m in measured]).cpu() for key in measured[0]}
        if self._last is None:
            self._last = fresh
        else:  # a stopped net's weights no longer change: its last metrics still hold
            for key, values in fresh.items():
                self._last[key][self.running] = values
        return {key: values.clone() for key, values in self._last.items()}

    def model(self, index: int) -> nn.Module:
        return self.models[index]

    def stop(self, stopped: torch.Tensor) -> None:
        kept = ~stopped[self.running]
        self.stack.keep(kept.to(self.stack.weights[0].device), self.optimizer)
        self.running = self.running[kept]


def fit_together(models: Sequence[nn.Module], train: Split, *, task: Task, epochs: int, batch_size: int, lr: float,
                 seeds: Sequence[int], eval_splits: Mapping[str, Split], sinks: Sequence[MetricSink],
                 on_epoch: Sequence[EpochHook | None] | None = None, stop_when: StopRule | None = None,
                 log_iterations: bool = False, anneal_lr: bool = False, evaluate_at: Collection[int] | None = None,
                 desc: str = "") -> list[dict[str, float]]:
    """Train `models` (nets built by `models.mlp`, one shape) in place; returns each one's final metrics.

    The arguments mean what they mean for `fit`, one per model where they are sequences.
    """
    if not len(models) == len(seeds) == len(sinks):
        raise ValueError("fit_together needs one seed and one sink per model")
    learner = StackedMlps(models, train, task, eval_splits, lr, batch_size)
    return drive(learner, epochs=epochs, shuffles=Shuffles(seeds, len(train[0]), batch_size), device=train[0].device,
                 sinks=sinks, hooks=on_epoch, stop_when=stop_when, log_iterations=log_iterations,
                 anneal_lr=anneal_lr, evaluate_at=evaluate_at, desc=desc)
