"""part1_3c_i: two batch sizes, one interpolation curve that passes exactly through both trained models."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import hw1track, run_quick

from hw1track.measures.interpolation import interpolate_state_dict
from hw1track.training.data import load_mnist, subset
from hw1track.training.evaluation import evaluate_splits
from hw1track.training.models import mlp
from hw1track.training.tasks import CLASSIFICATION
from runs import part1_3c_i

N_TRAIN, N_TEST = 1500, 400


@pytest.mark.slow
def test_quick_run_logs_the_curve_through_both_models_and_analysis_draws_it(store_uri, reader, tmp_path):
    parent_id = run_quick("part1_3c_i", store_uri, "epochs=1", f"train_size={N_TRAIN}", f"test_size={N_TEST}")
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    assert [c.data.params["batch_size"] for c in children] == ["64", "1000"]
    assert [c.data.params["interpolation_alpha"] for c in children] == ["0", "1"]
    assert {c.data.params["seed"] for c in children} == {"0"}  # same initial weights: only the batch size differs
    assert {c.data.params["n_params"] for c in children} == {"109386"}

    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    assert list(curve.columns) == ["alpha", "train_loss", "test_loss", "train_acc", "test_acc"]
    assert curve.alpha.iloc[0] == -1.0 and curve.alpha.iloc[-1] == 2.0 and np.diff(curve.alpha).max() <= 0.05 + 1e-12
    metrics = ["train_loss", "test_loss", "train_acc", "test_acc"]
    for child in children:
        alpha = float(child.data.params["interpolation_alpha"])
        row = curve[curve.alpha == alpha]
        assert len(row) == 1
        assert row[metrics].iloc[0].to_dict() == {key: child.data.metrics[key] for key in metrics}  # exactly

    # an interior point is the logged weights mixed, evaluated on the same full splits
    theta1, theta2 = (torch.load(reader.download(c, "weights/final.pt"), weights_only=True) for c in children)
    mnist = load_mnist()
    splits = {"train": subset(mnist.train_x, mnist.train_y, N_TRAIN, 0),
              "test": subset(mnist.test_x, mnist.test_y, N_TEST, 0)}
    model = mlp(part1_3c_i.MODEL)
    model.load_state_dict(interpolate_state_dict(theta1, theta2, 1.5))
    again = evaluate_splits(model, splits, CLASSIFICATION)
    row = curve[curve.alpha == 1.5].iloc[0]
    assert row.test_loss == pytest.approx(again["test_loss"], rel=1e-6) and row.train_acc == again["train_acc"]
    assert row.train_loss > min(curve.train_loss)  # extrapolating away from the solutions costs loss

    store = tmp_path / "analysis"
    drawn = hw1track("analyze", "part1_3c_i", "--tracking-uri", store_uri, "--out", str(store), cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert [p.name for p in (store / "part1_3c_i").iterdir()] == ["interpolation.png"]
    logged = {a.path for a in reader.client.list_artifacts(parent_id, "figures")}
    assert logged == {"figures/interpolation.png"}

