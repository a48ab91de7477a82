"""Full-batch MSE nets trained as one hand-written stack end where `fit` ends each alone, and log what it logs."""

import pytest
import torch

from hw1track.training.fit import fit
from hw1track.training.full_batch import BatchedAdam
from hw1track.training.full_batch_replicates import RowwiseAdam, fit_full_batch_together, trains_full_batch
from hw1track.training.models import cnn, mlp, seeded_model
from hw1track.training.targets import sample_target
from hw1track.training.tasks import CLASSIFICATION, REGRESSION

SEEDS = [0, 1_000_000, 2_000_000]  # replicates 0-2 of one model


class Recorder:
    def __init__(self):
        self.rows, self.series = [], []

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def log_series(self, series, first_step):
        self.series.append((first_step, {key: list(values) for key, values in series.items()}))


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _both(widths, train, seeds, **options):
    """Each seed's net trained alone by `fit`, then all of them together: (models, sinks, hook records) of each."""
    def hook(seen):
        return lambda epoch, model, metrics: seen.append((epoch, _weights(model).clone(), dict(metrics)))

    alone, alone_sinks, alone_seen = [], [], []
    for seed in seeds:
        model, sink, seen = seeded_model(lambda: mlp(widths), seed), Recorder(), []
        fit(model, train, seed=seed, sink=sink, on_epoch=hook(seen), **options)
        alone.append(model)
        alone_sinks.append(sink)
        alone_seen.append(seen)
    together = [seeded_model(lambda: mlp(widths), seed) for seed in seeds]
    sinks = [Recorder() for _ in seeds]
    seen_together = [[] for _ in seeds]
    finals = fit_full_batch_together(together, train, seeds=seeds, sinks=sinks,
                                     on_epoch=[hook(seen) for seen in seen_together], **options)
    return (alone, alone_sinks, alone_seen), (together, sinks, seen_together, finals)


def _assert_same(alone, together, rel=1e-4, abs=1e-6):
    (models_alone, sinks_alone, seen_alone), (models_together, sinks_together, seen_together, finals) = alone, together
    for model_alone, model_together in zip(models_alone, models_together):
        torch.testing.assert_close(_weights(model_together), _weights(model_alone), rtol=1e-4, atol=1e-6)
    for sink_alone, sink_together, final in zip(sinks_alone, sinks_together, finals):
        assert [step for step, _ in sink_together.rows] == [step for step, _ in sink_alone.rows]
        for (_, metrics_alone), (_, metrics_together) in zip(sink_alone.rows, sink_together.rows):
            assert metrics_together.keys() == metrics_alone.keys()
            for key in metrics_alone:
                assert metrics_together[key] == pytest.approx(metrics_alone[key], rel=rel, abs=abs), key
        assert final.keys() == sink_alone.rows[-1][1].keys() - {"lr"}
        assert [first for first, _ in sink_together.series] == [first for first, _ in sink_alone.series]
        for (_, series_alone), (_, series_together) in zip(sink_alone.series, sink_together.series):
            assert series_together.keys() == series_alone.keys()
            for key in series_alone:
                assert series_together[key] == pytest.approx(series_alone[key], rel=rel, abs=abs), key
    for hooked_alone, hooked_together in zip(seen_alone, seen_together):
        assert [epoch for epoch, _, _ in hooked_together] == [epoch for epoch, _, _ in hooked_alone]
        for (_, weights_alone, metrics_alone), (_, weights_together, metrics_together) in zip(hooked_alone,
                                                                                               hooked_together):
            torch.testing.assert_close(weights_together, weights_alone, rtol=1e-4, atol=1e-6)
            assert metrics_together == pytest.approx(metrics_alone, rel=rel, abs=abs)


@pytest.mark.parametrize("widths", [(1, 5, 10, 10, 10, 10, 10, 5, 1), (1, 190, 1)], ids=["deep", "shallow"])
def test_part1_1a_replicates_match_separate_fits(widths):
    """part1_1a's recipe on sinc: per-epoch train_loss from epoch 0, hooks seeing each epoch's weights."""
    x, y = sample_target("sinc", 1000)
    alone, together = _both(widths, (x, y), SEEDS, task=REGRESSION, epochs=40, batch_size=1000, lr=1e-3,
                            eval_splits={"train": (x, y)})
    _assert_same(alone, together)
    steps = [step for step, _ in together[1][0].rows]
    assert steps == list(range(41)) and [epoch for epoch, _, _ in together[2][0]] == steps
    assert not torch.equal(_weights(together[0][0]), _weights(together[0][1]))


def test_per_iteration_records_and_another_eval_split_match_separate_fits():
    """part1_2b's sinc net: loss and grad_norm of every update with step = iteration, plus a held-out split."""
    x, y = sample_target("sinc", 1000)
    held_out = sample_target("sinc", 333)
    alone, together = _both((1, 500, 1), (x, y), SEEDS[:2], task=REGRESSION, epochs=30, batch_size=1000, lr=1e-3,
                            eval_splits={"train": (x, y), "test": held_out}, log_iterations=True)
    _assert_same(alone, together)
    sink = together[1][0]
    assert [first for first, _ in sink.series] == list(range(1, 31))
    assert {key for _, metrics in sink.rows for key in metrics} == {"train_loss", "test_loss"}


def test_stopping_and_the_cosine_schedule_match_separate_fits():
    """Nets stopping at different epochs keep their weights while the others train on, with the annealed rate."""
    x, y = sample_target("sinc", 1000)
    widths, epochs = (1, 10, 18, 15, 4, 1), 60
    losses = []
    for seed in SEEDS:
        sink = Recorder()
        fit(seeded_model(lambda: mlp(widths), seed), (x, y), task=REGRESSION, epochs=epochs, batch_size=1000, lr=1e-2,
            seed=seed, eval_splits={"train": (x, y)}, sink=sink)
        losses.append([metrics["train_loss"] for _, metrics in sink.rows])
    threshold = sorted(loss[20] for loss in losses)[1]  # the middle net at epoch 20: one stops earlier, one later
    stop_when = lambda metrics: metrics["train_loss"] <= threshold  # noqa: E731
    alone, together = _both(widths, (x, y), SEEDS, task=REGRESSION, epochs=epochs, batch_size=1000, lr=1e-2,
                            eval_splits={"train": (x, y)}, stop_when=stop_when, anneal_lr=True, log_iterations=True)
    _assert_same(alone, together)
    stops = [max(step for step, _ in sink.rows) for sink in alone[1]]
    assert len(set(stops)) > 1 and min(stops) < epochs, f"the nets should stop at different epochs: {stops}"
    assert any("lr" in metrics for _, metrics in together[1][0].rows)


def test_rowwise_adam_is_fits_optimiser_to_the_bit_and_leaves_stopped_rows_alone():
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 571, generator=generator)
    alone = [row.clone().requires_grad_() for row in theta]
    optimizers = [torch.optim.Adam([p], lr=1e-3, fused=True) for p in alone]
    rowwise = RowwiseAdam(theta, lr=1e-3)
    for step in range(50):
        if step == 20:
            rowwise.rows(torch.tensor([0, 2]))
            frozen = theta[1].clone()
        gradient = torch.randn(3, 571, generator=generator) * 1e-2
        for i, (p, optimizer) in enumerate(zip(alone, optimizers)):
            if step < 20 or i != 1:
                p.grad = gradient[i].clone()
                optimizer.step()
        rowwise.update(gradient)
    assert torch.equal(torch.stack([p.detach() for p in alone]), theta)
    assert torch.equal(theta[1], frozen) and rowwise.steps.tolist() == [50, 20, 50]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_adam_is_torch_adams_arithmetic_to_the_bit(dtype):
    """part1_2c's optimiser (float64 there) takes the steps torch.optim.Adam takes, over more steps than
    the first whose bias correction torch's pow and sqrt would round differently from Python's."""
    generator = torch.Generator().manual_seed(1)
    theta = torch.randn(2, 251, generator=generator, dtype=dtype)
    alone = [row.clone().requires_grad_() for row in theta]
    optimizers = [torch.optim.Adam([p], lr=1e-3, foreach=False) for p in alone]
    batched = BatchedAdam(theta, lr=1e-3)
    for _ in range(100):
        gradient = torch.randn(2, 251, generator=generator, dtype=dtype) * 1e-2
        for p, g, optimizer in zip(alone, gradient, optimizers):
            p.grad = g.clone()
            optimizer.step()
        batched.update(gradient)
    assert torch.equal(torch.stack([p.detach() for p in alone]), theta)


def test_only_full_batch_mse_fits_of_one_mlp_shape_take_this_path():
    x, y = sample_target("sinc", 100)
    nets = [mlp((1, 8, 1)), mlp((1, 8, 1))]
    assert trains_full_batch(nets, (x, y), REGRESSION, batch_size=100)
    assert not trains_full_batch(nets, (x, y), REGRESSION, batch_size=64)
    assert not trains_full_batch(nets, (x, y.squeeze(1).long()), CLASSIFICATION, batch_size=100)
    assert not trains_full_batch([mlp((1, 8, 1)), mlp((1, 9, 1))], (x, y), REGRESSION, batch_size=100)
    assert not trains_full_batch([mlp((1, 8, 1)), mlp((1, 8, 1)).double()], (x, y), REGRESSION, batch_size=100)
    assert not trains_full_batch([cnn((4,), (8,)), cnn((4,), (8,))], (x, y), REGRESSION, batch_size=100)
    with pytest.raises(ValueError, match="full batch"):
        fit_full_batch_together(nets, (x, y), task=REGRESSION, epochs=1, batch_size=10, lr=1e-3, seeds=[0, 1],
                                eval_splits={"train": (x, y)}, sinks=[Recorder(), Recorder()])
