"""part1_2a: eight seeded trainings, their weight snapshots, and one PCA shared by all of them."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import hw1track, run_quick
from sklearn.decomposition import PCA

from analysis import part1_2a as analysis
from hw1track.measures.pca import project_jointly
from hw1track.measures.snapshots import ARTIFACT, load_snapshots, snapshot_epochs
from hw1track.tracking.query import StoreReader, replicate
from hw1track.training.models import mlp, n_params
from runs import part1_2a

METRICS = ["pca_whole_explained_var_1", "pca_whole_explained_var_2",
           "pca_layer1_explained_var_1", "pca_layer1_explained_var_2"]


def test_the_dnn_has_the_homework_size():
    assert n_params(mlp(part1_2a.WIDTHS)) == 418_060


def test_snapshots_start_at_epoch_0_and_end_at_the_last_epoch():
    assert snapshot_epochs(30, 3) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert snapshot_epochs(3, 2) == [0, 2, 3]


def test_project_jointly_fits_one_pca_on_all_runs():
    rng = np.random.default_rng(0)
    # Runs that start far apart and move along their own directions, like trainings from different seeds.
    runs = [rng.normal(size=200) * 5 + np.outer(np.arange(6), rng.normal(size=200)) for _ in range(4)]
    joint = project_jointly(runs)
    assert joint.pca.n_samples_ == 24
    reference = PCA(n_components=2, svd_solver="full").fit(np.concatenate(runs))
    for rows, points in zip(runs, joint.points):
        np.testing.assert_allclose(points, reference.transform(rows), atol=1e-8)
    np.testing.assert_allclose(np.concatenate(joint.points).mean(axis=0), 0, atol=1e-8)
    # The shared axes separate the runs; a run's own PCA would centre it on itself and find other axes.
    assert np.linalg.norm(joint.points[0].mean(axis=0)) > 1
    own = PCA(n_components=2, svd_solver="full").fit_transform(runs[0])
    assert not np.allclose(np.abs(own), np.abs(joint.points[0]), atol=1e-3)


SEEDS = 2


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny part1_2a study shared by the tests below: 8 trainings × 2 replicates, snapshots at epochs 0, 2, 3."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('part1_2a') / 'mlflow.db'}"
    parent_id = run_quick("part1_2a", uri, "epochs=3", "snapshot_every=2", "train_size=512", "test_size=256",
                          seeds=SEEDS)
    reader = StoreReader(uri)
    return uri, reader, reader.client.get_run(parent_id)


@pytest.mark.slow
def test_eight_trainings_per_replicate_with_distinct_seeds_store_their_snapshots(study, tmp_path):
    _, reader, parent = study
    children = reader.children(parent)
    assert len(children) == 8 * SEEDS
    assert len({run.data.params["seed"] for run in children}) == 8 * SEEDS
    for index in range(SEEDS):
        assert sorted(int(run.data.params["training"]) for run in children if replicate(run) == index) == list(range(8))
    history = reader.history(children, ["train_acc"])
    for run in children:
        path = reader.download(run, ARTIFACT, tmp_path / run.info.run_id)
        snapshots = load_snapshots(path)
        assert snapshots["epoch"].tolist() == [0, 2, 3]
        whole, first_layer = snapshots["whole"], snapshots["first_layer"]
        assert whole.shape == (3, 418_060) and first_layer.shape == (3, 500 * 784)
        # The first layer is a view into the whole vector, so the weights are stored once.
        assert Path(path).stat().st_size < 1.05 * whole.numel() * 4
        final = torch.load(reader.download(run, "weights/final.pt", tmp_path / run.info.run_id), weights_only=True)
        assert torch.equal(whole[-1], torch.cat([t.flatten() for t in final.values()]))
        assert torch.equal(first_layer[-1], final[snapshots["first_layer_name"]].flatten())
        logged = history[history.run_id == run.info.run_id].set_index("step").value
        assert logged.index.tolist() == [0, 2, 3]  # evaluated where the snapshots are, not after epoch 1
        np.testing.assert_allclose(snapshots["train_acc"].numpy(), logged.to_numpy())
    # Different seeds start from different weights.
    starts = [load_snapshots(reader.download(run, ARTIFACT, tmp_path / run.info.run_id))["whole"][0] for run in children]
    assert not torch.equal(starts[0], starts[1])


@pytest.mark.slow
def test_every_training_of_every_replicate_is_another_seed_of_one_net(study):
    _, reader, parent = study
    assert len({run.data.tags["hw1track.group"] for run in reader.children(parent)}) == 1


@pytest.mark.slow
def test_analysis_projects_every_run_with_the_one_pca_and_logs_its_ratios(study):
    _, reader, parent = study
    figures = analysis.figures(reader, parent)
    assert set(figures) == {"pca_whole", "pca_layer1"}
    logged = reader.client.get_run(parent.info.run_id).data.metrics
    trajectories = analysis.load_trajectories(reader, reader.children(parent))
    for view, name in (("whole", "whole"), ("first_layer", "layer1")):
        joint = analysis.project_view(trajectories, view)
        assert joint.pca.n_samples_ == 8 * SEEDS * 3
        assert logged[f"pca_{name}_explained_var_1"] == pytest.approx(joint.explained_variance_ratio[0])
        assert logged[f"pca_{name}_explained_var_2"] == pytest.approx(joint.explained_variance_ratio[1])
        assert 0 < logged[f"pca_{name}_explained_var_2"] <= logged[f"pca_{name}_explained_var_1"] < 1
        alone = project_jointly([trajectories[0][view].numpy()])
        assert not np.allclose(alone.points[0], joint.points[0], atol=1e-3)
        for snapshots, points in zip(trajectories, joint.points):
            np.testing.assert_allclose(points, joint.pca.transform(snapshots[view].numpy()), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_analyze_in_a_fresh_process_draws_both_views_and_logs_the_metrics(study, tmp_path):
    uri, reader, parent = study
    logged_before = {name: len(reader.client.get_metric_history(parent.info.run_id, name)) for name in METRICS}
    done = hw1track("analyze", "part1_2a", "--tracking-uri", uri, "--out", str(tmp_path / "figures"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "figures" / "part1_2a").iterdir()) == ["pca_layer1.png",
                                                                                      "pca_whole.png"]
    for name in METRICS:
        assert len(reader.client.get_metric_history(parent.info.run_id, name)) == logged_before[name] + 1


@pytest.mark.slow
def test_figures_draw_every_path_of_every_replicate_and_name_the_count(study):
    _, reader, parent = study
    children = reader.children(parent)
    figures = analysis.figures(reader, parent)
    for figure in figures.values():
        (ax,) = figure.axes
        assert len(ax.lines) == 8 * SEEDS  # one path per training and replicate
        assert f"8 trainings × {SEEDS} seeds = {8 * SEEDS} paths" in ax.get_title()
        # colour by training, marker by replicate: one legend entry each, not one per path
        (legend,) = figure.legends
        labels = [text.get_text() for text in legend.get_texts()]
        assert labels == [f"training {i}" for i in range(8)] + [f"replicate {r}" for r in range(SEEDS)]
        colors = {}
        for line in ax.lines:
            colors.setdefault(line.get_color(), set()).add(line.get_linestyle())
        assert len(colors) == 8 and all(len(styles) == SEEDS for styles in colors.values())
        # only each path's last point carries its accuracy
        finals = sorted(round(100 * run.data.metrics["train_acc"], 1) for run in children)
        assert sorted(float(text.get_text()) for text in ax.texts) == finals


@pytest.mark.slow
def test_figures_with_one_seed_look_as_before_replicates(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent_id = run_quick("part1_2a", uri, "epochs=1", "snapshot_every=1", "train_size=256", "test_size=128",
                          seeds=1)
    reader = StoreReader(uri)
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    for figure in analysis.figures(reader, parent).values():
        (ax,) = figure.axes
        assert not figure.legends and len(ax.lines) == 8
        assert "one PCA fitted on the snapshots of all 8 runs" in ax.get_title() and "seed" not in ax.get_title()
        assert [text.get_text() for text in ax.get_legend().get_texts()] == [
            f"{run.data.params['model']} (seed {run.data.params['seed']})" for run in children]
        assert len(ax.texts) == 8 * 2  # every snapshot, epochs 0 and 1, labelled
