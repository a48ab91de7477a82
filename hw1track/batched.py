"""Many small models of one architecture trained together as one stack.

A model of a few hundred parameters costs almost nothing to compute; trained
one at a time, its step is dominated by Python and per-kernel overhead.
Stacking M such models along a leading dimension and running them through one
vmapped forward turns M small kernels into one (benchmarks/part1_2c_batched.py
measures the gain). The models never interact: what is differentiated is the
sum of the per-model objectives, so each model's gradient is exactly its own,
and Adam is elementwise, with a step count per model so that one model can
stop while the others go on.

`minimise_one_at_a_time` is the plain path (torch.optim.Adam on one module at a
time) that the stacked path must reproduce; tests and benchmarks compare the two.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from hw1track.train import MetricSink

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ModelStack:
    """M models of one architecture as stacked parameters (each tensor has a leading model dimension)."""

    def __init__(self, models: Sequence[nn.Module]):
        params, buffers = stack_module_state(list(models))
        self.params = {name: tensor.detach().requires_grad_() for name, tensor in params.items()}
        self.buffers = buffers
        # The template only supplies the forward code; its own weights are never read.
        self.template = copy.deepcopy(models[0]).to("meta")
        self._outputs = vmap(self._one_output, in_dims=(0, 0, None))

    def _one_output(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def n_params(self) -> int:
        """P of one model."""
        return sum(tensor[0].numel() for tensor in self.params.values())

    def tensors(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every model's output on the same inputs: (M, n, ...)."""
        return self._outputs(self.params, self.buffers, x)

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss: Loss = F.mse_loss) -> torch.Tensor:
        """Each model's full-batch loss, (M,), differentiable w.r.t. the stacked parameters."""
        per_example = loss(self.outputs(x), y.expand(len(self), *y.shape), reduction="none")
        return per_example.flatten(1).mean(dim=1)

    def flat(self) -> torch.Tensor:
        """(M, P): model i's parameters concatenated in state_dict order, as one detached vector."""
        return torch.cat([tensor.detach().flatten(1) for tensor in self.params.values()], dim=1)

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Model `index` as a state_dict that loads into the architecture the stack was built from."""
        state = {name: tensor[index].detach().clone() for name, tensor in self.params.items()}
        state.update({name: tensor[index].clone() for name, tensor in self.buffers.items()})
        return state


def per_model_squared_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """(M,) squared L2 norm of each model's slice of all `tensors` together."""
    return torch.stack([t.pow(2).flatten(1).sum(dim=1) for t in tensors]).sum(dim=0)


class BatchedAdam:
    """Adam (as torch.optim.Adam, no weight decay) over stacked parameters, with a step count per model.

    A model whose `active` flag is off is left untouched, moments included, so that
    stopping it early is the same as never having taken the remaining steps.
    """

    def __init__(self, params: Sequence[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        n_models = self.params[0].shape[0]
        self.steps = torch.zeros(n_models, dtype=torch.float64, device=self.params[0].device)

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], active: torch.Tensor | None = None) -> None:
        beta1, beta2 = self.betas
        if active is None:
            active = torch.ones_like(self.steps, dtype=torch.bool)
        self.steps += active
        # Bias corrections in float64, as torch.optim.Adam computes them from a Python float.
        step_size = self.lr / (1 - beta1 ** self.steps.clamp(min=1))
        correction2_sqrt = (1 - beta2 ** self.steps.clamp(min=1)).sqrt()
        for param, grad, exp_avg, exp_avg_sq in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            shape = (-1,) + (1,) * (param.dim() - 1)
            on = active.view(shape)
            exp_avg.copy_(torch.where(on, exp_avg.lerp(grad, 1 - beta1), exp_avg))
            exp_avg_sq.copy_(torch.where(on, exp_avg_sq * beta2 + (1 - beta2) * grad * grad, exp_avg_sq))
            denom = exp_avg_sq.sqrt() / correction2_sqrt.to(param.dtype).view(shape) + self.eps
            update = exp_avg / denom * step_size.to(param.dtype).view(shape)
            param.sub_(torch.where(on, update, torch.zeros_like(update)))


# What a phase of training minimises. Each returns the gradient of the objective
# w.r.t. `params` and the (M,) norm of the LOSS gradient, which is what every
# phase reports, whatever it minimises.
Objective = Callable[[torch.Tensor, Sequence[torch.Tensor]], tuple[Sequence[torch.Tensor], torch.Tensor]]


def loss_objective(losses: torch.Tensor, params: Sequence[torch.Tensor]):
    """The loss itself: ordinary training."""
    grads = torch.autograd.grad(losses.sum(), params)
    return grads, per_model_squared_norm(grads).sqrt()


def squared_grad_norm_objective(losses: torch.Tensor, params: Sequence[torch.Tensor]):
    """‖∇L‖² per model, differentiated through the gradient itself (a Hessian-vector product, 2H∇L)."""
    grads = torch.autograd.grad(losses.sum(), params, create_graph=True)
    squared = per_model_squared_norm(grads)
    return torch.autograd.grad(squared.sum(), params), squared.detach().sqrt()


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
    params = stack.tensors()
    optimizer = BatchedAdam(params, lr=lr)
    active = torch.ones(len(stack), dtype=torch.bool, device=x.device)
    checks = stop_below is not None
    losses_seen, norms_seen = [], []
    for step in range(steps + checks):
        losses = stack.losses(x, y, loss)
        last = step == steps  # only reached with checks: the weights after the last update
        grads, norms = (loss_objective if last else gradient_of)(losses, params)
        losses_seen.append(losses.detach())
        norms_seen.append(norms)
        if checks:
            active &= norms >= stop_below
            if last or not active.any():
                break
        optimizer.step(grads, active)
    return Trajectory(torch.stack(losses_seen), torch.stack(norms_seen), optimizer.steps.long(),
                      ~active if checks else torch.zeros_like(active), has_final_row=checks)


def minimise_one_at_a_time(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, *, objective: str,
                           steps: int, lr: float, stop_below: float | None = None,
                           loss: Loss = F.mse_loss) -> list[list[tuple[float, float]]]:
    """The reference path: each model alone with torch.optim.Adam; returns (loss, grad norm) per iteration."""
    records = []
    for model in models:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=lr, foreach=True)
        record = []
        for step in range(steps + (stop_below is not None)):
            value = loss(model(x), y)
            grads = torch.autograd.grad(value, params, create_graph=objective == "squared_grad_norm")
            squared_norm = sum(g.pow(2).sum() for g in grads)
            record.append((value.item(), squared_norm.sqrt().item()))
            if stop_below is not None and (squared_norm.sqrt().item() < stop_below or step == steps):
                break
            if objective == "squared_grad_norm":
                grads = torch.autograd.grad(squared_norm, params)
            for p, g in zip(params, grads):
                p.grad = g.detach()
            optimizer.step()
        records.append(record)
    return records


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
