"""Full-batch training of a stack of small models, each stopping on its own.

Every iteration is one full-batch Adam update of all M models at once; what is
minimised is an `Objective` (the loss itself, or ‖∇L‖² to walk towards a
critical point). Adam is elementwise, with a step count per model, so that one
model can stop at its threshold while the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hw1track.training.driver import drive
from hw1track.training.sinks import MetricSink
from hw1track.training.stacks import Loss, ModelStack


class BatchedAdam(torch.optim.Optimizer):
    """Adam (as torch.optim.Adam, no weight decay) over a stack's (M, P) θ, with a step count per model.

    A model whose `active` flag is off is left untouched, moments included, so that
    stopping it early is the same as never having taken the remaining steps. It
    is a torch `Optimizer` so that the driver's learning-rate schedule can set
    its rate like any other's, but it updates through `update`, not `step`:
    torch wraps every optimiser's `step` in a profiler record, which cost a
    tenth of a 20-net part1_2c iteration.
    """

    def __init__(self, theta: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__([theta], {"lr": lr})
        self.theta = theta
        self.betas, self.eps = betas, eps
        self.exp_avg = torch.zeros_like(theta)
        self.exp_avg_sq = torch.zeros_like(theta)
        self.steps = torch.zeros(len(theta), dtype=torch.float64, device=theta.device)
        self._updates = 0
        self._corrections = torch.zeros(2, 1, dtype=torch.float64, device=theta.device)  # by step count

    def _bias_corrections(self, updates: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each model's 1 - β1**step and (1 - β2**step) ** 0.5, the doubles torch.optim.Adam computes in Python.

        torch's pow and sqrt of a float64 tensor differ from Python's in the last bit for 1-2 % of the
        steps; a table of Python's values, doubled when the step counts outgrow it, costs a gather a step.
        """
        if updates >= self._corrections.shape[1]:
            beta1, beta2 = self.betas
            steps = range(2 * updates)
            table = [[1 - beta1 ** k for k in steps], [(1 - beta2 ** k) ** 0.5 for k in steps]]
            self._corrections = torch.tensor(table, dtype=torch.float64, device=self.theta.device)
        index = self.steps.long().clamp(min=1)
        return self._corrections[0, index], self._corrections[1, index]

    def step(self, closure: None = None) -> None:  # type: ignore[override]
        raise TypeError("BatchedAdam takes the stack's gradient: call update(grad, active)")

    @torch.no_grad()
    def update(self, grad: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """One Adam step of every model along its row of `grad`; rows not flagged in `active` stay as they are."""
        lr = self.param_groups[0]["lr"]
        everyone = active is None or bool(active.all())
        if not everyone:
            frozen = ~active
            kept = [tensor[frozen] for tensor in (self.theta, self.exp_avg, self.exp_avg_sq)]
        self.steps += 1 if everyone else active
        self._updates += 1  # no model's step count exceeds it
        beta1, beta2 = self.betas
        correction1, correction2_sqrt = self._bias_corrections(self._updates)
        # lr / tensor would be lr · (1 / tensor), rounded twice: a true division, as Adam's lr / bias_correction1
        step_size = torch.full_like(correction1, lr).div_(correction1).to(self.theta.dtype).unsqueeze(1)
        correction2_sqrt = correction2_sqrt.to(self.theta.dtype).unsqueeze(1)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq.sqrt() / correction2_sqrt).add_(self.eps)
        # torch.optim.Adam's order (addcdiv with value -step_size): (step_size · m) / denom, to the bit
        self.theta.sub_(self.exp_avg * step_size / denom)
        if not everyone:
            for tensor, values in zip((self.theta, self.exp_avg, self.exp_avg_sq), kept):
                tensor[frozen] = values


# What a phase of training minimises. Each returns the (M,) losses, the (M, P)
# gradient of the objective w.r.t. θ and the (M,) norm of the LOSS gradient,
# which is what every phase reports, whatever it minimises.
Objective = Callable[[ModelStack, torch.Tensor, torch.Tensor, Loss], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def loss_objective(stack: ModelStack, x: torch.Tensor, y: torch.Tensor, loss: Loss = F.mse_loss):
    """The loss itself: ordinary training."""
    losses, gradients = stack.losses_and_gradients(x, y, loss)
    return losses, gradients, gradients.norm(dim=1)


def squared_grad_norm_objective(stack: ModelStack, x: torch.Tensor, y: torch.Tensor, loss: Loss = F.mse_loss):
    """‖∇L‖² per model, differentiated through the gradient itself (a Hessian-vector product, 2H∇L).

    Each stack computes it its own way: `DenseReluStack` writes the product out.
    """
    return stack.squared_grad_norm_gradients(x, y, loss)


OBJECTIVES: dict[str, Objective] = {"loss": loss_objective, "squared_grad_norm": squared_grad_norm_objective}


class FullBatchStack:
    """A stack of models as the driver's learner: an epoch is one full-batch update of every running model.

    Evaluating at the current weights already computes the gradient of the
    objective there, so the update that follows reuses it instead of a second
    pass: one pass per iteration, as a hand-written loop would have.
    """

    def __init__(self, stack: ModelStack, x: torch.Tensor, y: torch.Tensor, objective: str, lr: float, loss: Loss):
        self.stack, self.x, self.y, self.loss = stack, x, y, loss
        self.gradient_of = OBJECTIVES[objective]
        self.optimizer = BatchedAdam(stack.theta, lr=lr)
        self.active = torch.ones(len(stack), dtype=torch.bool, device=x.device)
        self._everyone = True  # no model has stopped: every row is updated, with no mask to apply
        self._gradients: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.stack)

    def train_epoch(self, orders: torch.Tensor | None, record: bool) -> None:
        # An epoch is one update, so its per-update record is the evaluation that follows it.
        self.optimizer.update(self._gradients, None if self._everyone else self.active)

    def evaluate(self) -> dict[str, torch.Tensor]:
        losses, self._gradients, norms = self.gradient_of(self.stack, self.x, self.y, self.loss)
        return {"loss": losses, "grad_norm": norms}

    def model(self, index: int) -> nn.Module:
        raise NotImplementedError("a full-batch stack hands its models out through stack.state_dict(index)")

    def stop(self, stopped: torch.Tensor) -> None:
        self.active &= ~stopped.to(self.active.device)
        self._everyone = False


@dataclass
class Trajectory:
    """Per-iteration records of M models: row k is measured at the weights after k updates.

    Model i has `steps_taken[i] + 1` rows, the last at its final weights (the
    measurement that stopped it, or the one after the last allowed update);
    rows past a model's own count are padding.
    """

    loss: torch.Tensor  # (iterations + 1, M)
    grad_norm: torch.Tensor  # (iterations + 1, M)
    steps_taken: torch.Tensor  # (M,) int64: updates each model received
    reached: torch.Tensor  # (M,) bool: stopped below the threshold

    def rows(self, index: int) -> int:
        return int(self.steps_taken[index]) + 1


class _Recorder:
    """Writes every iteration's (M,) loss and gradient norm into buffers allocated once.

    Thousands of small tensors kept alive between the activations of each step
    fragment the heap, which then grows by about 1 MB a step.
    """

    def __init__(self, steps: int, m: int, dtype: torch.dtype, device: torch.device):
        self.records = torch.full((2, steps + 1, m), float("nan"), dtype=dtype, device=device)
        self.rows = 0

    def __call__(self, epoch: int, metrics: dict[str, torch.Tensor]) -> None:
        self.records[0, epoch], self.records[1, epoch] = metrics["loss"], metrics["grad_norm"]
        self.rows = epoch + 1


def minimise(stack: ModelStack, x: torch.Tensor, y: torch.Tensor, *, objective: str, steps: int, lr: float,
             stop_below: float | None = None, loss: Loss = F.mse_loss) -> Trajectory:
    """Full-batch Adam on `objective` for every model of `stack`, in place, through the epoch driver.

    With `stop_below`, a model stops (and keeps its weights) at the first
    iteration where its loss-gradient norm is below it; the loop ends when all
    have stopped or after `steps` updates.
    """
    learner = FullBatchStack(stack, x, y, objective, lr, loss)
    recorder = _Recorder(steps, len(stack), stack.theta.dtype, x.device)
    stop_when = None if stop_below is None else (lambda metrics: metrics["grad_norm"] < stop_below)
    drive(learner, epochs=steps, device=x.device, observe=recorder, stop_when=stop_when,
          desc=f"{len(stack)} models, {objective}")
    records = recorder.records[:, :recorder.rows]
    reached = ~learner.active if stop_below is not None else torch.zeros_like(learner.active)
    return Trajectory(records[0], records[1], learner.optimizer.steps.long(), reached)


def log_trajectory(sink: MetricSink, trajectory: Trajectory, index: int, first_step: int, every: int = 1,
                   include_final: bool = True) -> int:
    """Log model `index`'s `loss` and `grad_norm` rows with step = first_step + row; returns the next free step.

    Every `every`-th row is logged, and always the last, so that a phase's end
    point is in the history however sparse it is. Without `include_final` the
    row at the final weights is left out: the next phase starts from those
    weights, and its first row measures them again.
    """
    rows = trajectory.rows(index) - (not include_final)
    loss = trajectory.loss[:rows, index].tolist()
    grad_norm = trajectory.grad_norm[:rows, index].tolist()
    for row in sorted({*range(0, rows, every), rows - 1} - {-1}):
        sink.log_metrics({"loss": loss[row], "grad_norm": grad_norm[row]}, step=first_step + row)
    return first_step + rows
