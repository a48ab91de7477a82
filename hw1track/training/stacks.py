"""Many small models of one architecture as one stack, so that M small kernels become one.

A model of a few hundred parameters costs almost nothing to compute; trained
one at a time, its step is dominated by Python and per-kernel overhead.
Stacking M such models along a leading dimension turns M small kernels into
one: `ModelStack` does it for any architecture through a vmapped forward and
autograd, `DenseReluStack` for the ReLU nets of `models.mlp` with the passes
(the ‖∇L‖² objective's Hessian-vector product included) written out as
batched matmuls, which is faster again for part1_2c's 100 nets
(benchmarks/part1_2c_batched.py measures all three paths). The models never
interact: what is differentiated is the sum of the per-model objectives, so
each model's gradient is exactly its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from hw1track.measures import curvature
from hw1track.measures.flat_params import ParamLayout
from hw1track.training.models import mlp_layers

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ModelStack:
    """M models of one architecture as one (M, P) tensor θ: row i is model i's parameters in state_dict order.

    One flat leaf keeps the optimiser to a handful of elementwise kernels per
    step whatever the depth; the per-layer tensors the forward pass needs are
    views into it, so an update of θ is an update of every layer.
    """

    def __init__(self, models: Sequence[nn.Module]):
        # stack_module_state checks that the models share one class and mode, and stacks their buffers;
        # its per-layer copies of the parameters are dropped: θ is one (M, P) leaf.
        _, self.buffers = stack_module_state(list(models))
        self.layout = ParamLayout(models[0])
        self.theta = torch.stack([self.layout.flatten(model) for model in models]).requires_grad_()
        # The template only supplies the forward code; its own weights are never read.
        self.template = copy.deepcopy(models[0]).to("meta")
        self._outputs = vmap(self._one_output, in_dims=(0, 0, None))

    def _one_output(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def __len__(self) -> int:
        return self.theta.shape[0]

    @property
    def n_params(self) -> int:
        """P of one model."""
        return self.theta.shape[1]

    def params(self, theta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The stacked per-layer tensors, (M, *shape) each, as views into `theta` (default: the stack's own)."""
        return self.layout.unflatten(self.theta if theta is None else theta)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every model's output on the same inputs: (M, n, ...)."""
        return self._outputs(self.params(), self.buffers, x)

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss: Loss = F.mse_loss) -> torch.Tensor:
        """Each model's full-batch loss, (M,), differentiable w.r.t. θ."""
        per_example = loss(self.outputs(x), y.expand(len(self), *y.shape), reduction="none")
        return per_example.flatten(1).mean(dim=1)

    def losses_and_gradients(self, x: torch.Tensor, y: torch.Tensor, loss: Loss = F.mse_loss,
                             create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(M,) losses and their (M, P) gradients; with `create_graph` the gradients are differentiable w.r.t. θ."""
        with torch.enable_grad():
            losses = self.losses(x, y, loss)
            (gradients,) = torch.autograd.grad(losses.sum(), self.theta, create_graph=create_graph)
        return losses.detach(), gradients

    def squared_grad_norm_gradients(self, x: torch.Tensor, y: torch.Tensor, loss: Loss = F.mse_loss
                                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(M,) losses, the (M, P) gradient of each model's ‖∇L‖² (2H∇L) and the (M,) ‖∇L‖.

        Autograd differentiates this stack's own gradient pass a second time,
        which works for any architecture and loss at the price of recording
        and replaying a graph of every operation of that pass.
        """
        with torch.enable_grad():
            losses, gradients = self.losses_and_gradients(x, y, loss, create_graph=True)
            squared = gradients.pow(2).sum(dim=1)
            (objective_gradients,) = torch.autograd.grad(squared.sum(), self.theta)
        return losses, objective_gradients, squared.detach().sqrt()

    def hessians(self, x: torch.Tensor, y: torch.Tensor, loss: Loss = F.mse_loss) -> torch.Tensor:
        """(M, P, P): every model's full Hessian of its full-batch loss at the current θ.

        Differentiates this stack's own gradient pass (for a `DenseReluStack`,
        the hand-written one), all models at once: `curvature.HESSIAN_METHOD`,
        the name runs log for it.
        """
        _, gradients = self.losses_and_gradients(x, y, loss, create_graph=True)
        return curvature.hessians_from_gradients(gradients, self.theta)

    def flat(self) -> torch.Tensor:
        """(M, P): model i's parameters concatenated in state_dict order, as one detached tensor."""
        return self.theta.detach()

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Model `index` as a state_dict that loads into the architecture the stack was built from."""
        state = {name: tensor[index].detach().clone() for name, tensor in self.params().items()}
        state.update({name: tensor[index].clone() for name, tensor in self.buffers.items()})
        return state


def _relu_backward(gradient: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """`gradient` where the unit was active (its ReLU `output` > 0), else 0; in place unless autograd records.

    ReLU's own backward kernel does it in one pass where a product with a
    boolean mask takes three; writing in place also spares a fresh
    (M, n, width) buffer, whose first-touch page faults cost as much as the pass.
    """
    if torch.is_grad_enabled():
        return torch.ops.aten.threshold_backward(gradient, output, 0)
    return torch.ops.aten.threshold_backward.grad_input(gradient, output, 0, grad_input=gradient)


class DenseReluStack(ModelStack):
    """A stack of `models.mlp` nets under the MSE, with the forward and backward passes written out.

    For nets of a few hundred parameters the generic stack's vmapped forward
    and autograd backward spend most of a step on dispatch and extra passes:
    here a step is one batched matmul per layer each way, a ReLU mask, and
    one concatenation into the (M, P) gradient, 2.7x faster for part1_2c's
    100 nets. The ‖∇L‖² objective's gradient 2H∇L is written out too, as
    Pearlmutter's R-operator (one more forward and backward pass, along ∇L):
    autograd's double backward records and replays a graph of both passes,
    and its phase-2 step took 8-9 ms against 1.7-1.9 ms for a plain gradient
    step; the R-passes take 4.0 ms (100 nets of 1-10-10-10-1 on 200 points,
    float64, 2 threads; benchmarks/part1_2c_batched.py). The gradient pass
    is plain tensor operations, so autograd can still differentiate it (full
    Hessians). Any other loss falls back to the generic path.
    """

    def __init__(self, models: Sequence[nn.Module]):
        mlp_layers(models[0])  # θ's layout is then (weight, bias) per layer, which `_layers` relies on
        super().__init__(models)

    def _layers(self, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        params = list(self.params(theta).values())
        return list(zip(params[0::2], params[1::2]))

    @staticmethod
    def _affine(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """inputs · weightᵀ + bias for every model: (M, n, in) → (M, n, out)."""
        if weight.shape[-1] == 1:  # one input feature: an outer product, one fused pass instead of a k = 1 GEMM
            return torch.addcmul(bias.unsqueeze(1), inputs, weight.transpose(1, 2))
        return torch.bmm(inputs, weight.transpose(1, 2)).add_(bias.unsqueeze(1))

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's input (the first is x, shared by all models), then the output: (M, n, width) each."""
        inputs = x.flatten(1)
        activations = [inputs.expand(len(self), *inputs.shape)]
        layers = self._layers(self.theta)
        for depth, (weight, bias) in enumerate(layers):
            z = self._affine(activations[-1], weight, bias)
            activations.append(z if depth == len(layers) - 1 else z.relu_())
        return activations

    def _tangent_forward(self, activations: list[torch.Tensor], tangents: list[tuple[torch.Tensor, torch.Tensor]]
                         ) -> list[torch.Tensor | None]:
        """R{·} of every layer's input, then of the output, along the direction whose layers are `tangents`.

        The inputs x do not depend on θ, so the first entry is None and the
        first layer's R{a} is just x · R{W}ᵀ + R{b}.
        """
        layers = self._layers(self.theta)
        tangent_activations: list[torch.Tensor | None] = [None]
        for depth, ((weight, _), (tangent_weight, tangent_bias)) in enumerate(zip(layers, tangents)):
            z = self._affine(activations[depth], tangent_weight, tangent_bias)
            if depth:
                z.baddbmm_(tangent_activations[-1], weight.transpose(1, 2))
            tangent_activations.append(z if depth == len(layers) - 1 else _relu_backward(z, activations[depth + 1]))
        return tangent_activations

    def _backward(self, delta: torch.Tensor, activations: list[torch.Tensor],
                  primal: tuple[list[torch.Tensor], list[torch.Tensor | None], list[tuple[torch.Tensor, torch.Tensor]]]
                  | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The (M, P) gradient from `delta` = ∂L/∂output, and every layer's ∂L/∂(its output).

        With `primal` = (the plain pass's per-layer deltas, `_tangent_forward`'s
        result, the direction's layers), `delta` is R{∂L/∂output} and this is
        the R-backward pass: the same recursion plus the terms where the plain
        deltas meet R{input} and R{W}. ReLU's second derivative is taken as 0,
        as autograd does, so the masks are the plain pass's.
        """
        gradients, deltas = [], []
        for depth, (weight, _) in reversed(list(enumerate(self._layers(self.theta)))):
            deltas.append(delta)
            if weight.shape[-1] == 1:
                # One input feature: (M, 1, out) and (M, out, 1) hold the same numbers, and bmm of a transposed
                # (M, out, n) operand against (M, n, 1) took 20-50x longer (2 or more nets, n = 1,000).
                weight_gradient = torch.bmm(activations[depth].transpose(1, 2), delta)
            else:
                weight_gradient = torch.bmm(delta.transpose(1, 2), activations[depth])
            if depth:
                back = torch.bmm(delta, weight)
                if primal is not None:
                    plain_deltas, tangent_activations, tangents = primal
                    weight_gradient.baddbmm_(plain_deltas[depth].transpose(1, 2), tangent_activations[depth])
                    back.baddbmm_(plain_deltas[depth], tangents[depth][0])
            gradients += [delta.sum(dim=1), weight_gradient.flatten(1)]
            if depth:
                delta = _relu_backward(back, activations[depth])
        return torch.cat(gradients[::-1], dim=1), deltas[::-1]

    def _mse_pass(self, x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(M,) losses, (M, P) gradients, every layer's input and every layer's ∂L/∂(its output)."""
        activations = self._forward(x)
        residual = activations.pop() - y
        losses = residual.pow(2).flatten(1).mean(dim=1)
        gradients, deltas = self._backward(residual * (2 / residual[0].numel()), activations)
        return losses, gradients, activations, deltas

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[-1]

    def losses_and_gradients(self, x: torch.Tensor, y: torch.Tensor, loss: Loss = F.mse_loss,
                             create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if loss is not F.mse_loss:
            return super().losses_and_gradients(x, y, loss, create_graph)
        with torch.set_grad_enabled(create_graph):
            losses, gradients, _, _ = self._mse_pass(x, y)
        return losses.detach(), gradients

    def squared_grad_norm_gradients(self, x: torch.Tensor, y: torch.Tensor, loss: Loss = F.mse_loss
                                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if loss is not F.mse_loss:
            return super().squared_grad_norm_gradients(x, y, loss)
        with torch.no_grad():
            losses, gradients, activations, deltas = self._mse_pass(x, y)
            # ∇‖∇L‖² = H(2∇L): the R-passes along 2g give it without a final scaling of their result.
            tangents = self._layers(gradients * 2)
            tangent_activations = self._tangent_forward(activations, tangents)
            tangent_output = tangent_activations.pop()
            objective_gradients, _ = self._backward(tangent_output * (2 / tangent_output[0].numel()), activations,
                                                    (deltas, tangent_activations, tangents))
        return losses, objective_gradients, gradients.norm(dim=1)
