"""The epoch driver: what a model with dropout logs is its eval-mode number, and training itself runs in train mode."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hw1track.tracking.runs import parent_run
from hw1track.tracking.store import Store
from hw1track.training.data import load_mnist, subset
from hw1track.training.evaluation import mode_free
from hw1track.training.fit import fit
from hw1track.training.models import cnn, mlp, seeded_model
from hw1track.training.sinks import NullSink
from hw1track.training.tasks import CLASSIFICATION


def _dropout_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, training: bool) -> float:
    was = model.training
    model.train(training)
    torch.manual_seed(1)
    with torch.no_grad():
        value = F.cross_entropy(model(x), y).item()
    model.train(was)
    return value


def test_a_dropout_model_logs_eval_mode_metrics_into_the_store(store_uri, reader):
    mnist = load_mnist()
    train = subset(mnist.train_x, mnist.train_y, 500, seed=0)
    test = subset(mnist.test_x, mnist.test_y, 300, seed=0)
    model = seeded_model(_dropout_mlp, 0)
    modes_seen = []
    model[3].register_forward_pre_hook(lambda module, inputs: modes_seen.append(module.training))
    with parent_run(Store(store_uri), "driver_test", "quick", "dropout", {}) as parent:
        with parent.child("dropout_mlp", {"p": 0.5}) as child:
            final = fit(model, train, task=CLASSIFICATION, epochs=3, batch_size=100, lr=1e-2, seed=0,
                        eval_splits={"train": train, "test": test}, sink=child)
    assert model.training, "training leaves the model in train mode, as it found it"
    assert True in modes_seen and False in modes_seen, "updates in train mode, evaluations in eval mode"

    eval_loss = _loss(model, *test, training=False)
    train_mode_loss = _loss(model, *test, training=True)
    assert abs(train_mode_loss - eval_loss) > 0.02 * eval_loss, "dropout must make the two modes differ"
    (run,) = reader.children(reader.latest_parent("driver_test"))
    logged = run.data.metrics["test_loss"]
    assert logged == final["test_loss"]
    assert abs(logged - eval_loss) < 1e-6 * max(1.0, eval_loss)
    assert abs(logged - train_mode_loss) > 0.01 * eval_loss


def test_only_layers_that_ignore_the_mode_are_mode_free():
    assert mode_free(mlp((784, 32, 10)).modules()) and mode_free(cnn((8,), (32,)).modules())
    assert not mode_free(_dropout_mlp().modules())
    assert not mode_free(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).modules())

    class Custom(nn.Linear):  # a subclass may read self.training in its forward
        pass

    assert not mode_free(nn.Sequential(Custom(3, 3)).modules())


def test_evaluating_at_chosen_epochs_logs_only_those_and_trains_the_same_models(store_uri, reader):
    mnist = load_mnist()
    train = subset(mnist.train_x, mnist.train_y, 600, seed=0)
    test = subset(mnist.test_x, mnist.test_y, 200, seed=0)
    finals, weights = {}, {}
    with parent_run(Store(store_uri), "driver_test", "quick", "schedule", {}) as parent:
        for name, evaluate_at in (("every_epoch", None), ("some_epochs", [2, 5])):
            model = seeded_model(lambda: mlp((784, 32, 10)), 0)
            with parent.child(name, {"schedule": str(evaluate_at)}) as child:
                finals[name] = fit(model, train, task=CLASSIFICATION, epochs=7, batch_size=100, lr=1e-2, seed=0,
                                   eval_splits={"train": train, "test": test}, sink=child, evaluate_at=evaluate_at)
            weights[name] = model.state_dict()
    assert finals["every_epoch"] == finals["some_epochs"]  # evaluating draws nothing: training is the same
    assert all(torch.equal(value, weights["some_epochs"][key]) for key, value in weights["every_epoch"].items())
    runs = {run.data.params["schedule"]: run for run in reader.children(reader.latest_parent("driver_test"))}
    steps = {schedule: [m.step for m in reader.client.get_metric_history(run.info.run_id, "train_loss")]
             for schedule, run in runs.items()}
    assert steps == {"None": list(range(8)), "[2, 5]": [0, 2, 5, 7]}  # epoch 0 and the last always

    with pytest.raises(ValueError, match="stopping rule"):
        fit(seeded_model(lambda: mlp((784, 32, 10)), 0), train, task=CLASSIFICATION, epochs=2, batch_size=100,
            lr=1e-2, seed=0, eval_splits={"train": train}, sink=NullSink(), evaluate_at=[1],
            stop_when=lambda metrics: metrics["train_loss"] < 0)
