"""One model trained by minibatch Adam: the `Learner` for the epoch driver, and `fit`, its everyday entry point.

Data are whole tensors already on the device: a minibatch is an index into
them, so an epoch costs the model's arithmetic and little else.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn

from hw1track.training.driver import EpochHook, Metrics, Shuffles, StopRule, drive
from hw1track.training.evaluation import Evaluator
from hw1track.training.sinks import MetricSink
from hw1track.training.tasks import Split, Task


def gradient_norm(model: nn.Module) -> torch.Tensor:
    """L2 norm of the concatenation of every parameter's gradient (one number for the whole model)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)


class SingleModel:
    """One nn.Module as the driver's learner (M = 1)."""

    def __init__(self, model: nn.Module, train: Split, task: Task, eval_splits: Mapping[str, Split], lr: float,
                 batch_size: int):
        if any(isinstance(module, nn.Conv2d) for module in model.modules()):
            # oneDNN's NHWC convolution and pooling kernels beat its NCHW ones for these thin layers
            # (benchmarks/conv_memory_format.py). A one-channel image has the same layout either way,
            # so only the weights change layout, before the optimiser sees them.
            model.to(memory_format=torch.channels_last)
        self.net, self.task, self.batch_size = model, task, batch_size
        self.evaluator = Evaluator(model, eval_splits, task)
        self.x, self.y = train
        # One fused kernel per step instead of a dozen passes over the weights: at batch 64 the update of the
        # 418k-parameter DNN was half of its step's time with foreach=True (benchmarks/vs_naive.py, W1).
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
        model.train()

    def __len__(self) -> int:
        return 1

    def train_epoch(self, orders: torch.Tensor | None, record: bool) -> Metrics | None:
        losses: list[torch.Tensor] = []
        norms: list[torch.Tensor] = []
        model, optimizer, x, y = self.net, self.optimizer, self.x, self.y
        for start in range(0, len(x), self.batch_size):
            if orders is None:
                xb, yb = x, y
            else:
                index = orders[0, start:start + self.batch_size]
                xb, yb = x[index], y[index]
            loss = self.task.loss(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if record:
                losses.append(loss.detach())
                norms.append(gradient_norm(model))
            optimizer.step()
        if not record:
            return None
        return {"loss": torch.stack(losses).unsqueeze(1), "grad_norm": torch.stack(norms).unsqueeze(1)}

    def evaluate(self) -> Metrics:
        return {key: value.reshape(1) for key, value in self.evaluator().items()}

    def model(self, index: int) -> nn.Module:
        return self.net

    def stop(self, stopped: torch.Tensor) -> None:
        pass  # the driver ends the loop once its only model has stopped


def fit(model: nn.Module, train: Split, *, task: Task, epochs: int, batch_size: int, lr: float, seed: int,
        eval_splits: Mapping[str, Split], sink: MetricSink, log_iterations: bool = False,
        on_epoch: EpochHook | None = None, stop_when: StopRule | None = None, anneal_lr: bool = False,
        evaluate_at: Collection[int] | None = None, desc: str = "") -> dict[str, float]:
    """Train `model` in place and return its final full-set metrics.

    Epoch metrics are logged with step = epoch, epoch 0 being the initial weights;
    with `log_iterations`, the minibatch loss and gradient norm of every update are
    logged with step = global iteration (1-based). The options are the driver's
    (`driver.drive`); shuffling is driven by `seed` alone, so the same seed gives
    the same numbers.
    """
    learner = SingleModel(model, train, task, eval_splits, lr, batch_size)
    shuffles = Shuffles([seed], len(train[0]), batch_size)
    (final,) = drive(learner, epochs=epochs, shuffles=shuffles, device=train[0].device, sinks=[sink],
                     hooks=[on_epoch], stop_when=stop_when, log_iterations=log_iterations, anneal_lr=anneal_lr,
                     evaluate_at=evaluate_at, desc=desc)
    return final
