"""part1_2b: the loss and the gradient norm of every update, for the sinc fit and the MNIST DNN."""

import math

import pytest
import torch
from conftest import run_quick

from analysis import part1_2b as analysis
from hw1track.training.fit import fit
from hw1track.training.models import mlp, n_params, seeded_model
from hw1track.training.targets import sample_target
from hw1track.training.tasks import REGRESSION
from runs import part1_2b


class Recorded:
    """A MetricSink that keeps every per-iteration value, to compare with an independent computation."""

    def __init__(self):
        self.series: dict[str, dict[int, float]] = {}

    def log_metrics(self, metrics, step):
        pass

    def log_series(self, series, first_step):
        for key, values in series.items():
            self.series.setdefault(key, {}).update({first_step + i: v for i, v in enumerate(values)})


def l2_norm_of_all_gradients(model, x, y) -> tuple[float, float]:
    """The loss and sqrt(sum of every squared partial derivative), computed in float64 from autograd.grad."""
    loss = torch.nn.functional.mse_loss(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.item(), math.sqrt(sum((g.double() ** 2).sum().item() for g in grads))


def test_the_sinc_dnn_has_1501_parameters():
    assert n_params(mlp(part1_2b.SINC_WIDTHS)) == 1501


def test_logged_grad_norm_is_the_l2_norm_of_the_concatenated_gradient_of_all_parameters():
    x, y = sample_target("sinc", 40)
    model = seeded_model(lambda: mlp((1, 4, 3, 1)), 7)
    replica = seeded_model(lambda: mlp((1, 4, 3, 1)), 7)
    recorded = Recorded()
    fit(model, (x, y), task=REGRESSION, epochs=6, batch_size=40, lr=1e-2, seed=7, eval_splits={}, sink=recorded,
        log_iterations=True)

    optimizer = torch.optim.Adam(replica.parameters(), lr=1e-2, foreach=True)
    for step in range(1, 7):
        loss, norm = l2_norm_of_all_gradients(replica, x, y)
        assert recorded.series["loss"][step] == pytest.approx(loss, rel=1e-5)
        assert recorded.series["grad_norm"][step] == pytest.approx(norm, rel=1e-5)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(replica(x), y).backward()
        optimizer.step()
    assert sorted(recorded.series["grad_norm"]) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_both_models_log_loss_and_grad_norm_at_every_iteration(store_uri, reader):
    parent_id = run_quick("part1_2b", store_uri, "sinc_iterations=60", "mnist_epochs=2", "train_size=640",
                          "test_size=200")
    parent = reader.client.get_run(parent_id)
    children = {run.data.params["data"]: run for run in reader.children(parent)}
    assert set(children) == {"sinc", "mnist"}
    assert children["sinc"].data.params["n_params"] == "1501"
    assert children["mnist"].data.params["n_params"] == "418060"
    assert children["sinc"].data.params["iterations"] == "60"
    assert children["mnist"].data.params["iterations"] == str(2 * 640 // 128)

    history = reader.history(children.values(), ["loss", "grad_norm"])
    for data, run in children.items():
        n_iterations = int(run.data.params["iterations"])
        for key in ("loss", "grad_norm"):
            series = history[(history.run_id == run.info.run_id) & (history.key == key)]
            assert series.step.tolist() == list(range(1, n_iterations + 1)), (data, key)
            assert (series.value > 0).all() and series.value.map(math.isfinite).all()

    # The first logged values of the sinc fit are those of the seeded initial weights, recomputed here.
    sinc = children["sinc"]
    x, y = sample_target("sinc", int(sinc.data.params["n_train"]))
    initial = seeded_model(lambda: mlp(part1_2b.SINC_WIDTHS), int(sinc.data.params["seed"]))
    loss, norm = l2_norm_of_all_gradients(initial, x, y)
    first = history[(history.run_id == sinc.info.run_id) & (history.step == 1)].set_index("key").value
    assert first["loss"] == pytest.approx(loss, rel=1e-5)
    assert first["grad_norm"] == pytest.approx(norm, rel=1e-5)

    figures = analysis.figures(reader, parent)
    assert set(figures) == {"grad_norm_sinc", "grad_norm_mnist"}
    for figure in figures.values():
        top, bottom = figure.axes
        assert top.get_shared_x_axes().joined(top, bottom)
        assert top.get_yscale() == "log"
