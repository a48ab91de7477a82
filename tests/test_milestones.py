"""The loss-plateau stopping rule against curves whose stopping epoch is known in closed form, and in `fit`."""

import math

import pytest
import torch

from hw1track.training.data import load_mnist, subset
from hw1track.training.fit import fit
from hw1track.training.milestones import LossPlateau
from hw1track.training.models import cnn, seeded_model
from hw1track.training.sinks import NullSink
from hw1track.training.tasks import CLASSIFICATION


def _first_stop(rule: LossPlateau, losses: list[list[float]]) -> list[int | None]:
    """Feed per-epoch losses of M models from epoch 0; each model's first epoch the rule stops it."""
    stops: list[int | None] = [None] * len(losses[0])
    for epoch, row in enumerate(losses):
        for i, stop in enumerate(rule({"train_loss": torch.tensor(row)}).tolist()):
            if stop and stops[i] is None:
                stops[i] = epoch
    return stops


def test_a_loss_halving_every_epoch_stops_when_a_window_gains_less_than_the_fraction_of_the_initial_loss():
    initial, window, fraction = math.log(10), 3, 0.002
    # best[e - 3] - best[e] = initial * 0.5**e * 7 falls below fraction * initial once 0.5**e < fraction / 7
    expected = math.ceil(math.log2(7 / fraction))
    losses = [[initial * 0.5 ** epoch] for epoch in range(30)]
    rule = LossPlateau(window, fraction)
    assert _first_stop(rule, losses) == [expected]
    assert rule.stopped_epoch.tolist() == [expected]


def test_models_stop_independently_and_one_bad_epoch_does_not_stop_a_model_still_improving():
    window, fraction = 2, 0.1
    # model 0 levels off at epoch 3; model 1 gains 0.4 per epoch but for one bad epoch (3), and stops at 7.
    # A rule on the latest loss would stop model 1 at epoch 3 (2.9 is worse than 2.6); on the best loss so
    # far, epochs 1 to 3 still gained 0.4 of the 0.3 it needs.
    losses = [[1.0, 3.0], [0.5, 2.6], [0.45, 2.2], [0.44, 2.9], [0.44, 1.8], [0.44, 1.4], [0.44, 1.39],
              [0.44, 1.38]]
    rule = LossPlateau(window, fraction)
    assert _first_stop(rule, losses) == [3, 7]
    assert rule.stopped_epoch.tolist() == [3, 7]


def test_a_model_that_levelled_off_on_a_bad_epoch_stops_only_once_it_is_back_on_its_level():
    window, fraction = 2, 0.1  # threshold 0.1 for a loss starting at 1
    # no progress over epochs 2 to 4, but epoch 4 is a bad one (0.9 against a best of 0.3); epoch 5 is back
    losses = [[1.0], [0.5], [0.3], [0.32], [0.9], [0.31], [0.3]]
    rule = LossPlateau(window, fraction)
    assert _first_stop(rule, losses) == [5]


def test_nothing_stops_within_the_first_window():
    rule = LossPlateau(5, 0.5)
    assert _first_stop(rule, [[1.0]] * 5) == [None]
    assert rule.stopped_epoch.tolist() == [-1]


@pytest.mark.parametrize("window, fraction", [(0, 0.1), (3, -0.1)])
def test_a_rule_that_could_never_be_met_is_refused(window, fraction):
    with pytest.raises(ValueError, match="plateau"):
        LossPlateau(window, fraction)


def test_fit_stops_a_real_cnn_at_the_epoch_the_rule_names_and_logs_nothing_after_it():
    mnist = load_mnist()
    train = subset(mnist.train_x, mnist.train_y, 300, 0)
    model = seeded_model(lambda: cnn((4,), (16,)), 0, "cpu")
    rule = LossPlateau(window=1, fraction=0.05)  # a coarse rule, so that a small CNN levels off within the cap
    seen: list[int] = []
    fit(model, train, task=CLASSIFICATION, epochs=60, batch_size=50, lr=3e-3, seed=0,
        eval_splits={"train": train}, sink=NullSink(), stop_when=rule,
        on_epoch=lambda epoch, _model, _metrics: seen.append(epoch))
    stopped = rule.stop_epoch()
    assert stopped is not None and 1 <= stopped < 60
    assert seen == list(range(stopped + 1))
