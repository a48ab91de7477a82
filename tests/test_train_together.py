"""Nets trained together end where each would end trained alone by `fit`, and log the same metrics."""

import pytest
import torch

from hw1track.training.data import load_mnist, subset
from hw1track.training.fit import fit
from hw1track.training.mlp_stack import MlpStack, fit_together
from hw1track.training.models import cnn, mlp, seeded_model
from hw1track.training.tasks import CLASSIFICATION, REGRESSION


class Recorder:
    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def log_series(self, series, first_step):
        raise AssertionError("nothing per-iteration is logged")


@pytest.fixture(scope="module")
def mnist_small():
    mnist = load_mnist()
    return subset(mnist.train_x, mnist.train_y, 600, seed=0), subset(mnist.test_x, mnist.test_y, 300, seed=0)


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _train_both(widths, train, eval_splits, task, seeds, epochs, batch_size):
    alone, alone_sinks = [], []
    for seed in seeds:
        model, sink = seeded_model(lambda: mlp(widths), seed), Recorder()
        fit(model, train, task=task, epochs=epochs, batch_size=batch_size, lr=1e-3, seed=seed,
            eval_splits=eval_splits, sink=sink)
        alone.append(model)
        alone_sinks.append(sink)
    together = [seeded_model(lambda: mlp(widths), seed) for seed in seeds]
    sinks = [Recorder() for _ in seeds]
    epochs_seen = [[] for _ in seeds]
    hooks = [lambda epoch, model, metrics, seen=seen: seen.append(epoch) for seen in epochs_seen]
    finals = fit_together(together, train, task=task, epochs=epochs, batch_size=batch_size, lr=1e-3, seeds=seeds,
                          eval_splits=eval_splits, sinks=sinks, on_epoch=hooks)
    assert epochs_seen == [list(range(epochs + 1))] * len(seeds)
    return alone, alone_sinks, together, sinks, finals


def test_mnist_classifiers_trained_together_match_training_alone(mnist_small):
    (x, y), (tx, ty) = mnist_small
    train, splits = (x, y), {"train": (x, y), "test": (tx, ty)}
    alone, alone_sinks, together, sinks, finals = _train_both((784, 32, 16, 10), train, splits, CLASSIFICATION,
                                                             seeds=[0, 1, 2], epochs=2, batch_size=64)
    for model_alone, model_together in zip(alone, together):
        torch.testing.assert_close(_weights(model_together), _weights(model_alone), rtol=1e-4, atol=1e-5)
    for sink_alone, sink_together, final in zip(alone_sinks, sinks, finals):
        assert [step for step, _ in sink_together.rows] == [0, 1, 2]
        for (_, metrics_alone), (_, metrics_together) in zip(sink_alone.rows, sink_together.rows):
            assert metrics_together.keys() == metrics_alone.keys()
            for key in metrics_alone:
                assert metrics_together[key] == pytest.approx(metrics_alone[key], rel=1e-4, abs=1e-4)
        assert final == sink_together.rows[-1][1]
    # The nets really differ: each kept its own initialisation and minibatch order.
    assert not torch.equal(_weights(together[0]), _weights(together[1]))


def test_a_full_batch_regression_fit_together_matches_training_alone():
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 100).unsqueeze(1)
    y = torch.sin(3 * x)
    alone, _, together, _, _ = _train_both((1, 8, 8, 1), (x, y), {"train": (x, y)}, REGRESSION,
                                           seeds=[3, 4], epochs=20, batch_size=1000)
    for model_alone, model_together in zip(alone, together):
        torch.testing.assert_close(_weights(model_together), _weights(model_alone), rtol=1e-5, atol=1e-6)


def test_only_same_shape_mlps_stack():
    with pytest.raises(ValueError, match="one shape"):
        MlpStack([mlp((4, 3, 2)), mlp((4, 5, 2))])
    with pytest.raises(ValueError, match="mlp"):
        MlpStack([cnn((4,), (8,))])


def test_a_net_without_biases_is_refused_by_both_stacks():
    from hw1track.training.stacks import DenseReluStack

    net = mlp((4, 3, 2))
    net[1] = torch.nn.Linear(4, 3, bias=False)
    for stack in (MlpStack, DenseReluStack):
        with pytest.raises(ValueError, match="biases"):
            stack([net])


class SeriesRecorder(Recorder):
    def __init__(self):
        super().__init__()
        self.series = []

    def log_series(self, series, first_step):
        self.series.append((first_step, {key: list(values) for key, values in series.items()}))


def test_stopping_schedule_and_per_iteration_logging_match_training_alone(mnist_small):
    """The driver's options act on each stacked net exactly as on a net trained alone by `fit`."""
    (x, y), (tx, ty) = mnist_small
    train, splits = (x, y), {"train": (x, y), "test": (tx, ty)}
    widths, seeds, epochs, batch_size = (784, 32, 16, 10), [0, 1, 2], 4, 64
    first_epoch = []
    for seed in seeds:
        sink = Recorder()
        fit(seeded_model(lambda: mlp(widths), seed), train, task=CLASSIFICATION, epochs=1, batch_size=batch_size,
            lr=1e-3, seed=seed, eval_splits=splits, sink=sink)
        first_epoch.append(sink.rows[-1][1]["train_acc"])
    threshold = max(first_epoch)  # the best net after one epoch stops there; the others train on
    options = dict(task=CLASSIFICATION, epochs=epochs, batch_size=batch_size, lr=1e-3, eval_splits=splits,
                   stop_when=lambda metrics: metrics["train_acc"] >= threshold, anneal_lr=True, log_iterations=True)

    alone, alone_sinks = [], []
    for seed in seeds:
        model, sink = seeded_model(lambda: mlp(widths), seed), SeriesRecorder()
        fit(model, train, seed=seed, sink=sink, **options)
        alone.append(model)
        alone_sinks.append(sink)
    together = [seeded_model(lambda: mlp(widths), seed) for seed in seeds]
    sinks = [SeriesRecorder() for _ in seeds]
    fit_together(together, train, seeds=seeds, sinks=sinks, **options)

    stops = [max(step for step, _ in sink.rows) for sink in alone_sinks]
    assert min(stops) == 1 and max(stops) > 1, f"the threshold should stop the nets at different epochs: {stops}"
    for model_alone, model_together, sink_alone, sink_together in zip(alone, together, alone_sinks, sinks):
        torch.testing.assert_close(_weights(model_together), _weights(model_alone), rtol=1e-4, atol=1e-5)
        assert [step for step, _ in sink_together.rows] == [step for step, _ in sink_alone.rows]
        for (_, metrics_alone), (_, metrics_together) in zip(sink_alone.rows, sink_together.rows):
            assert metrics_together.keys() == metrics_alone.keys()
            assert "lr" in metrics_alone or "train_acc" in metrics_alone
            for key in metrics_alone:
                assert metrics_together[key] == pytest.approx(metrics_alone[key], rel=1e-4, abs=1e-4)
        assert [first for first, _ in sink_together.series] == [first for first, _ in sink_alone.series]
        for (_, series_alone), (_, series_together) in zip(sink_alone.series, sink_together.series):
            for key in ("loss", "grad_norm"):
                assert series_together[key] == pytest.approx(series_alone[key], rel=1e-3, abs=1e-4)
