"""part1_2b: the loss and the gradient norm of every update, for the sinc fit and the MNIST DNN."""

import math

import pytest
import torch
from conftest import run_quick
from matplotlib.collections import PolyCollection

from analysis import part1_2b as analysis
from hw1track.tracking.query import replicate
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


def _bands(ax) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


@pytest.mark.slow
def test_both_models_log_loss_and_grad_norm_at_every_iteration(store_uri, reader):
    parent_id = run_quick("part1_2b", store_uri, "sinc_iterations=60", "mnist_epochs=2", "train_size=640",
                          "test_size=200", seeds=2)
    parent = reader.client.get_run(parent_id)
    runs = reader.children(parent)
    models = {data: [run for run in runs if run.data.params["data"] == data] for data in ("sinc", "mnist")}
    assert len(runs) == 4 and [[replicate(run) for run in group] for group in models.values()] == [[0, 1], [0, 1]]
    for data, group in models.items():
        assert len({run.data.tags["hw1track.group"] for run in group}) == 1
        assert len({run.data.params["seed"] for run in group}) == 2
        assert group[0].data.params["n_params"] == {"sinc": "1501", "mnist": "418060"}[data]
        assert group[0].data.params["iterations"] == {"sinc": "60", "mnist": str(2 * 640 // 128)}[data]

    history = reader.history(runs, ["loss", "grad_norm"])
    for run in runs:
        n_iterations = int(run.data.params["iterations"])
        for key in ("loss", "grad_norm"):
            series = history[(history.run_id == run.info.run_id) & (history.key == key)]
            assert series.step.tolist() == list(range(1, n_iterations + 1)), (run.info.run_name, key)
            assert (series.value > 0).all() and series.value.map(math.isfinite).all()

    # The first logged values of each sinc fit are those of its seeded initial weights, recomputed here.
    for sinc in models["sinc"]:
        x, y = sample_target("sinc", int(sinc.data.params["n_train"]))
        initial = seeded_model(lambda: mlp(part1_2b.SINC_WIDTHS), int(sinc.data.params["seed"]))
        loss, norm = l2_norm_of_all_gradients(initial, x, y)
        first = history[(history.run_id == sinc.info.run_id) & (history.step == 1)].set_index("key").value
        assert first["loss"] == pytest.approx(loss, rel=1e-5)
        assert first["grad_norm"] == pytest.approx(norm, rel=1e-5)

    figures = analysis.figures(reader, parent)
    assert set(figures) == {"grad_norm_sinc", "grad_norm_mnist"}
    for name, figure in figures.items():
        top, bottom = figure.axes
        assert top.get_shared_x_axes().joined(top, bottom)
        assert top.get_yscale() == "log" and "2 seeds" in top.get_title()
        for ax in (top, bottom):
            assert len(_bands(ax)) == 1, name
            legend = [text.get_text() for text in ax.get_legend().get_texts()]
            assert any("geometric mean of 2 seeds, 95% CI" in text for text in legend), (name, legend)

    # Minibatch curves are banded over each seed's own running mean, never over a window spanning two seeds.
    losses = history[history.key == "loss"]
    trends = analysis._trends(losses, 7)
    for run in runs:
        mine = losses[losses.run_id == run.info.run_id].sort_values("step")
        expected = mine.value.rolling(7, center=True, min_periods=1).mean().tolist()
        assert trends[trends.run_id == run.info.run_id].sort_values("step").value.tolist() == pytest.approx(expected)


@pytest.mark.slow
def test_one_seed_figures_are_plain_curves(store_uri, reader):
    parent = reader.client.get_run(run_quick("part1_2b", store_uri, "sinc_iterations=20", "mnist_epochs=1",
                                             "train_size=256", "test_size=100", seeds=1))
    figures = analysis.figures(reader, parent)
    assert set(figures) == {"grad_norm_sinc", "grad_norm_mnist"}
    # the DNN's title names the image set it trained on (Fashion-MNIST's says so), the function fit its target
    assert figures["grad_norm_mnist"].axes[0].get_title().startswith("MNIST: DNN 784-500-50-10")
    assert figures["grad_norm_sinc"].axes[0].get_title().startswith("sinc: DNN 1-500-1")
    for figure in figures.values():
        top, bottom = figure.axes
        assert "1 seed (no spread)" in top.get_title()
        assert not _bands(top) and not _bands(bottom) and len(top.get_lines()) == len(bottom.get_lines()) == 1
