"""One flat layout for every user of θ: state_dict order, views not copies, a leading batch dimension.

Curvature, sharpness and the model stacks must mean the same coordinate by
θ_i, or a Hessian, a sharpness box and the logged weights would describe
different points; each is checked here against the model it came from.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hw1track.measures import curvature
from hw1track.measures.flat_params import ParamLayout
from hw1track.measures.sharpness import model_loss
from hw1track.training.data import load_mnist
from hw1track.training.models import cnn, mlp, seeded_model
from hw1track.training.stacks import DenseReluStack, ModelStack

FACTORIES = {"mlp": lambda: mlp((784, 16, 10)), "cnn": lambda: cnn((4,), (16,))}


@pytest.fixture(scope="module")
def images():
    mnist = load_mnist()
    return mnist.test_x[:200], mnist.test_y[:200]


@pytest.mark.parametrize("name", FACTORIES)
def test_theta_is_the_state_dicts_parameters_in_order_and_unflattens_to_views(name):
    model = seeded_model(FACTORIES[name], 0)
    layout = ParamLayout(model)

    theta = layout.flatten(model)

    parameters = {key: value for key, value in model.state_dict().items() if key in dict(model.named_parameters())}
    assert layout.names == tuple(parameters)
    assert torch.equal(theta, torch.cat([value.flatten() for value in parameters.values()]))
    views = layout.unflatten(theta)
    assert list(views) == list(parameters)
    for key, value in parameters.items():
        assert torch.equal(views[key], value)
        assert views[key]._base is theta  # a view, not a copy
    theta.zero_()
    assert all(not view.any() for view in views.values())  # so writing θ writes every parameter
    assert all(value.any() for value in parameters.values())  # and flatten copied: the model is untouched


def test_a_leading_batch_dimension_unflattens_model_by_model():
    models = [seeded_model(FACTORIES["cnn"], seed) for seed in range(3)]
    layout = ParamLayout(models[0])
    thetas = torch.stack([layout.flatten(model) for model in models])

    views = layout.unflatten(thetas)

    for i, model in enumerate(models):
        for key, value in model.named_parameters():
            assert views[key].shape == (3, *value.shape)
            assert torch.equal(views[key][i], value)


def test_a_module_of_another_layout_is_refused_even_with_the_same_size():
    layout = ParamLayout(mlp((3, 4, 2)))  # 3·4 + 4 + 4·2 + 2 = 26 parameters
    with pytest.raises(ValueError, match="layout"):
        layout.flatten(mlp((2, 5, 2)))  # 2·5 + 5 + 5·2 + 2 = 27 parameters
    with pytest.raises(ValueError, match="layout"):
        layout.flatten(mlp((4, 3, 2)))  # 26 parameters too, in other shapes


@pytest.mark.parametrize("stack_class", [ModelStack, DenseReluStack])
def test_a_stacks_theta_and_views_are_its_models_parameters(stack_class):
    models = [seeded_model(lambda: mlp((1, 5, 3, 1)), seed).double() for seed in range(4)]
    stack = stack_class(models)

    assert torch.equal(stack.flat(), torch.stack([curvature.flatten_params(model) for model in models]))
    for i, model in enumerate(models):
        assert all(torch.equal(stack.state_dict(i)[key], value) for key, value in model.state_dict().items())
    with torch.no_grad():  # as an optimiser's step
        params = stack.params()
        stack.theta[2].mul_(-1)
        assert torch.equal(params["1.weight"][2], -models[2][1].weight)  # the step reaches the per-layer tensors


def test_curvature_and_sharpness_see_the_models_own_loss_at_theta(images):
    model = seeded_model(FACTORIES["mlp"], 1).double()
    x, y = images[0].double(), images[1]
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y)

    theta, loss_and_gradient = model_loss(model, x, y)
    flat_loss = curvature.loss_of_flat_params(model, F.cross_entropy, x, y)

    assert np.array_equal(theta, curvature.flatten_params(model).numpy())
    assert loss_and_gradient(theta)[0] == expected.item()
    assert torch.equal(flat_loss(torch.from_numpy(theta)), expected)
