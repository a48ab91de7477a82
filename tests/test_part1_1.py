"""part1_1a and part1_1b: equal-size models, what they log, and that a seed fixes every number."""

import pandas as pd
import pytest
import torch
from conftest import run_quick

from hw1track.training.models import cnn, mlp, n_params
from runs import part1_1a, part1_1b


@pytest.mark.parametrize("sizes", [
    [n_params(mlp(widths)) for widths in part1_1a.MODELS.values()],
    [n_params(cnn(channels, dense)) for channels, dense in part1_1b.MODELS.values()],
])
def test_compared_models_have_equal_size(sizes):
    assert (max(sizes) - min(sizes)) / max(sizes) <= 0.02


def test_the_1_1b_cnns_have_1_2_and_3_conv_layers():
    depths = [sum(isinstance(m, torch.nn.Conv2d) for m in cnn(c, d)) for c, d in part1_1b.MODELS.values()]
    assert depths == [1, 2, 3]


def _histories(reader, parent_id, key):
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    frame = reader.history(children, [key])
    return {run.info.run_name: frame[frame.run_id == run.info.run_id].value.tolist() for run in children}


def test_part1_1a_logs_params_curves_predictions_and_weights(store_uri, reader):
    parent_id = run_quick("part1_1a", store_uri, "epochs=40")
    parent = reader.client.get_run(parent_id)
    tags = parent.data.tags
    assert tags["hw1track.role"] == "parent" and tags["hw1track.preset"] == "quick"
    assert tags["hw1track.git_commit"] and tags["hw1track.version.torch"] == torch.__version__
    assert parent.data.params["epochs"] == "40" and parent.data.params["seed"] == "0"
    children = reader.children(parent)
    assert [c.info.run_name for c in children] == [f"{t}/{m}" for t in ("sinc", "sgn") for m in part1_1a.MODELS]
    assert len({c.data.params["seed"] for c in children}) == 6
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent_id and child.data.tags["hw1track.config_hash"]
        widths = tuple(int(w) for w in child.data.params["widths"].split("-"))
        assert int(child.data.params["n_params"]) == n_params(mlp(widths))
        steps = [m.step for m in reader.client.get_metric_history(child.info.run_id, "train_loss")]
        assert steps == list(range(41))
        state = torch.load(reader.download(child, "weights/final.pt"), weights_only=True)
        model = mlp(widths)
        model.load_state_dict(state)
        grid = pd.read_csv(reader.download(child, "predictions.csv"))
        with torch.no_grad():
            again = model(torch.tensor(grid.x.values, dtype=torch.float32).unsqueeze(1)).squeeze(1)
        assert torch.allclose(again, torch.tensor(grid.y_pred.values, dtype=torch.float32), atol=1e-6)
        final_mse = ((grid.y_pred - grid.y_true) ** 2).mean()
        assert final_mse == pytest.approx(child.data.metrics["train_loss"], rel=1e-4)


def test_same_seed_same_numbers_other_seed_other_numbers(store_uri, reader):
    first = _histories(reader, run_quick("part1_1a", store_uri, "epochs=30", "targets=sinc"), "train_loss")
    again = _histories(reader, run_quick("part1_1a", store_uri, "epochs=30", "targets=sinc"), "train_loss")
    other = _histories(reader, run_quick("part1_1a", store_uri, "epochs=30", "targets=sinc", "seed=5"), "train_loss")
    assert first == again
    assert first["sinc/deep"] != other["sinc/deep"]


@pytest.mark.slow
def test_part1_1b_logs_full_set_metrics_per_epoch(store_uri, reader, data_root):
    parent_id = run_quick("part1_1b", store_uri, "epochs=2", "train_size=2000", "test_size=1000")
    parent = reader.client.get_run(parent_id)
    assert parent.data.tags["hw1track.mnist_md5"]
    children = reader.children(parent)
    assert [c.info.run_name for c in children] == list(part1_1b.MODELS)
    for child in children:
        for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
            assert [m.step for m in reader.client.get_metric_history(child.info.run_id, key)] == [0, 1, 2]
        assert 0.3 < child.data.metrics["test_acc"] <= 1.0  # learnt something in two epochs on 2,000 images
        # accuracy is a fraction of the whole evaluation set, not a minibatch estimate
        assert (child.data.metrics["test_acc"] * 1000) == pytest.approx(round(child.data.metrics["test_acc"] * 1000))
        assert child.data.params["n_train"] == "2000"
