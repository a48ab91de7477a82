"""part1_3c_ii: five batch sizes, each child logging updates, sensitivity and sharpness under the agreed names."""

import math

import pytest
import torch
from conftest import hw1track, run_quick

from hw1track.measures.sensitivity import DEFINITION, sensitivity
from hw1track.measures.sharpness import model_loss
from hw1track.training.data import load_mnist, subset
from hw1track.training.models import mlp
from runs import part1_3c_ii


def test_presets_sweep_the_homeworks_batch_sizes_under_the_agreed_metric_names():
    assert [part1_3c_ii.sharpness_metric(e) for e in (1e-3, 5e-4)] == ["sharpness_eps1e-3", "sharpness_eps5e-4"]
    for preset in part1_3c_ii.PRESETS.values():
        assert preset.batch_sizes == (10, 385, 760, 1135, 1510)
        assert [part1_3c_ii.sharpness_metric(e) for e in preset.sharpness_epsilons] == [
            "sharpness_eps1e-3", "sharpness_eps5e-4"]


@pytest.mark.slow
def test_quick_run_logs_updates_sensitivity_and_sharpness_and_analysis_draws_them(store_uri, reader, tmp_path):
    n_train, n_test, n_sharp = 1600, 300, 200  # n_train above the largest batch, 1510
    parent_id = run_quick("part1_3c_ii", store_uri, "epochs=1", f"train_size={n_train}", f"test_size={n_test}",
                          f"sharpness_examples={n_sharp}", "sharpness_maxiter=3")
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    assert [int(c.data.params["batch_size"]) for c in children] == [10, 385, 760, 1135, 1510]

    mnist = load_mnist()
    test_x = subset(mnist.test_x, mnist.test_y, n_test, 0)[0]
    train = subset(mnist.train_x, mnist.train_y, n_train, 0)
    sharpness_set = subset(*train, n_sharp, 0)
    for child in children:
        params, metrics = child.data.params, child.data.metrics
        assert params["sensitivity_definition"] == DEFINITION and params["sharpness_maxiter"] == "3"
        assert params["sharpness_examples"] == str(n_sharp) and params["seed"] == "0"
        assert {"train_loss", "test_loss", "train_acc", "test_acc", "sensitivity", "sharpness_eps1e-3",
                "sharpness_eps5e-4", "n_updates"} <= set(metrics)
        assert metrics["n_updates"] == math.ceil(n_train / int(params["batch_size"]))
        assert metrics["sharpness_eps1e-3"] > 0 and metrics["sharpness_eps5e-4"] > 0

        # the measurements belong to the logged final weights
        model = mlp(part1_3c_ii.MODEL)
        model.load_state_dict(torch.load(reader.download(child, "weights/final.pt"), weights_only=True))
        assert metrics["sensitivity"] == pytest.approx(sensitivity(model, test_x), rel=1e-6)
        theta, loss = model_loss(model, *sharpness_set)
        assert metrics["sharpness_base_loss"] == pytest.approx(loss(theta)[0], rel=1e-9)
    updates = [c.data.metrics["n_updates"] for c in children]
    assert updates == sorted(updates, reverse=True) and updates[0] == 160

    out = tmp_path / "analysis"
    drawn = hw1track("analyze", "part1_3c_ii", "--tracking-uri", store_uri, "--out", str(out), cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert [p.name for p in (out / "part1_3c_ii").iterdir()] == ["batch_size.png"]
    assert {a.path for a in reader.client.list_artifacts(parent_id, "figures")} == {"figures/batch_size.png"}
