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

from hw1track.training.sinks import MetricSink
from hw1track.training.stacks import Loss, ModelStack


class BatchedAdam:
    """Adam (as torch.optim.Adam, no weight decay) over a stack's (M, P) θ, with a step count per model.

    A model whose `active` flag is off is left untouched, moments included, so that
    stopping it early is the same as never having taken the remaining steps.
    """

    def __init__(self, theta: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.theta = theta
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = torch.zeros_like(theta)
        self.exp_avg_sq = torch.zeros_like(theta)
        self.steps = torch.zeros(len(theta), dtype=torch.float64, device=theta.device)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, active: torch.Tensor | None = None) -> None:
        everyone = active is None or bool(active.all())
        if not everyone:
            frozen = ~active
            kept = [tensor[frozen] for tensor in (self.theta, self.exp_avg, self.exp_avg_sq)]
        self.steps += 1 if everyone else active
        beta1, beta2 = self.betas
        # Bias corrections in float64, as torch.optim.Adam computes them from a Python float.
        step_size = (self.lr / (1 - beta1 ** self.steps.clamp(min=1))).to(self.theta.dtype).unsqueeze(1)
        correction2_sqrt = (1 - beta2 ** self.steps.clamp(min=1)).sqrt().to(self.theta.dtype).unsqueeze(1)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq.sqrt() / correction2_sqrt).add_(self.eps)
        self.theta.sub_(self.exp_avg / denom * step_size)
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


@dataclass
class Trajectory:
    """Per-iteration records of M models: row k is measured at the weights before update k+1.

    When training has a stopping threshold, every model also has a row at its
    final weights (the measurement that stopped it, or the check after the last
    allowed update), so model i has `steps_taken[i] + 1` rows; without one it has
    `steps_taken[i]`. Rows past a model's own count are padding.
    """

    loss: torch.Tensor  # (iterations, M)
    grad_norm: torch.Tensor  # (iterations, M)
    steps_taken: torch.Tensor  # (M,) int64: updates each model received
    reached: torch.Tensor  # (M,) bool: stopped below the threshold
    has_final_row: bool

    def rows(self, index: int) -> int:
        return int(self.steps_taken[index]) + int(self.has_final_row)


def minimise(stack: ModelStack, x: torch.Tensor, y: torch.Tensor, *, objective: str, steps: int, lr: float,
             stop_below: float | None = None, loss: Loss = F.mse_loss) -> Trajectory:
    """Full-batch Adam on `objective` for every model of `stack`, in place.

    With `stop_below`, a model stops (and keeps its weights) at the first
    iteration where its loss-gradient norm is below it; the loop ends when all
    have stopped or after `steps` updates.
    """
    gradient_of = OBJECTIVES[objective]
    optimizer = BatchedAdam(stack.theta, lr=lr)
    active = torch.ones(len(stack), dtype=torch.bool, device=x.device)
    checks = stop_below is not None
    # Rows are written into buffers allocated once: thousands of small tensors kept alive between the
    # activations of each step fragment the heap, which then grows by about 1 MB a step.
    records = torch.full((2, steps + checks, len(stack)), float("nan"), dtype=stack.theta.dtype, device=x.device)
    rows = 0
    for step in range(steps + checks):
        last = step == steps  # only reached with checks: the weights after the last update
        losses, gradients, norms = (loss_objective if last else gradient_of)(stack, x, y, loss)
        records[0, step], records[1, step] = losses, norms
        rows += 1
        if checks:
            active &= norms >= stop_below
            if last or not active.any():
                break
        optimizer.step(gradients, active if checks else None)
    return Trajectory(records[0, :rows], records[1, :rows], optimizer.steps.long(),
                      ~active if checks else torch.zeros_like(active), has_final_row=checks)


def log_trajectory(sink: MetricSink, trajectory: Trajectory, index: int, first_step: int, every: int = 1) -> int:
    """Log model `index`'s `loss` and `grad_norm` rows with step = first_step + row; returns the next free step.

    Every `every`-th row is logged, and always the last, so that a phase's end
    point is in the history however sparse it is.
    """
    rows = trajectory.rows(index)
    loss = trajectory.loss[:rows, index].tolist()
    grad_norm = trajectory.grad_norm[:rows, index].tolist()
    for row in sorted({*range(0, rows, every), rows - 1} - {-1}):
        sink.log_metrics({"loss": loss[row], "grad_norm": grad_norm[row]}, step=first_step + row)
    return first_step + rows
