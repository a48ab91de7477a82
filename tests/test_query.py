"""The query API notebooks use: runs as DataFrames, metric histories and artifacts, by experiment name."""

import pytest
import torch
from conftest import run_quick

from hw1track.errors import StoreError
from hw1track.tracking import query
from hw1track.tracking.query import StoreReader
from hw1track.tracking.runs import parent_run
from hw1track.tracking.store import Store
from hw1track.training.threads import intra_op_threads

TINY_3C_I = ("epochs=1", "train_size=600", "test_size=200")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A store holding one finished part1_3c_i invocation and, newer than it, one that failed."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('query') / 'mlflow.db'}"
    with intra_op_threads(1):
        finished = run_quick("part1_3c_i", uri, *TINY_3C_I, seeds=1)
    with pytest.raises(RuntimeError), parent_run(Store(uri), "part1_3c_i", "quick", "crashed", {}) as crashed:
        raise RuntimeError("training crashed")
    return uri, finished, crashed.run_id


@pytest.mark.slow
def test_experiment_runs_are_the_children_of_the_newest_finished_invocation(study):
    uri, finished, crashed = study
    runs = query.experiment_runs("part1_3c_i", tracking_uri=uri)
    client = StoreReader(uri).client

    assert runs.run_name.tolist() == ["bs64", "bs1000", "bs1000-independent-init"]
    assert set(runs.parent_run_id) == {finished} and set(runs.experiment) == {"part1_3c_i"}
    assert set(runs.status) == {"FINISHED"}
    assert runs["params.batch_size"].tolist() == [64, 600, 600]  # 1000 capped at the 600 training images
    assert runs["params.n_params"].dtype.kind == "i" and runs["params.widths"].tolist() == ["784-128-64-10"] * 3
    for _, row in runs.iterrows():
        logged = client.get_run(row.run_id).data
        assert row["metrics.test_acc"] == logged.metrics["test_acc"] and row["params.seed"] == int(logged.params["seed"])
        assert row["tags.hw1track.role"] == "child"

    explicit = query.experiment_runs("part1_3c_i", parent_run_id=finished, tracking_uri=uri)
    assert explicit.run_id.tolist() == runs.run_id.tolist()

    invocations = query.invocations("part1_3c_i", tracking_uri=uri)
    assert invocations.run_id.tolist() == [crashed, finished] and invocations.status.tolist() == ["FAILED", "FINISHED"]
    assert invocations.start_time.is_monotonic_decreasing


@pytest.mark.slow
def test_the_default_store_is_the_one_mlflow_tracking_uri_names(study, monkeypatch):
    uri, finished, _ = study
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert query.reader().store.uri == uri
    assert query.experiment_runs("part1_3c_i").run_id.tolist() == \
        query.experiment_runs("part1_3c_i", tracking_uri=uri).run_id.tolist()


@pytest.mark.slow
def test_metric_history_of_one_run_or_a_whole_frame_is_tidy(study):
    uri, _, _ = study
    runs = query.experiment_runs("part1_3c_i", tracking_uri=uri)
    client = StoreReader(uri).client

    both = query.metric_history(runs, ["test_acc", "train_loss"], tracking_uri=uri)
    assert list(both.columns) == ["run_id", "run_name", "key", "step", "value"]
    assert set(both.run_name) == {"bs64", "bs1000", "bs1000-independent-init"}
    assert set(both.key) == {"test_acc", "train_loss"}
    for run_id in runs.run_id:
        series = both[(both.run_id == run_id) & (both.key == "test_acc")]
        assert series.step.tolist() == [0, 1]  # initial weights, then the one epoch
        assert series.value.tolist() == [m.value for m in client.get_metric_history(run_id, "test_acc")]

    one = query.metric_history(runs.run_id[0], "test_loss", tracking_uri=uri)
    assert set(one.run_name) == {"bs64"} and set(one.key) == {"test_loss"} and len(one) == 2

    every = query.metric_history(runs.run_id[0], tracking_uri=uri)
    assert set(every.key) == {"train_loss", "train_acc", "test_loss", "test_acc"}


@pytest.mark.slow
def test_artifacts_are_listed_and_downloaded_by_run_id(study, tmp_path):
    uri, finished, _ = study
    runs = query.experiment_runs("part1_3c_i", tracking_uri=uri)
    child = runs.run_id[0]
    assert query.list_artifacts(child, tracking_uri=uri) == ["weights/final.pt"]
    assert "interpolation.csv" in query.list_artifacts(finished, tracking_uri=uri)

    path = query.download_artifact(child, "weights/final.pt", tmp_path, tracking_uri=uri)
    assert path.parent == tmp_path and path.name == "final.pt"
    state = torch.load(path, weights_only=True)
    assert sum(tensor.numel() for tensor in state.values()) == runs["params.n_params"][0]


def test_an_experiment_never_run_is_a_store_error_that_says_what_to_do(tmp_path):
    with pytest.raises(StoreError, match="run `hw1track run part1_3b` first"):
        query.experiment_runs("part1_3b", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()
