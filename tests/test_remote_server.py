"""A team's tracking server: `hw1track run`, `analyze` and `report` against `mlflow server` over HTTP.

The server keeps runs in its own SQLite database and artifacts in its own
folder (`--serve-artifacts`), so the client needs no access to either: weights
and figures must arrive there through the server, and nothing may be written
to a local store beside the client.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import hw1track
from servers import tracking_server  # noqa: F401 (fixture)

from hw1track.tracking.query import StoreReader

EXPERIMENT = "part1_1b"
TINY = ("--set", "epochs=1", "--set", "train_size=500", "--set", "test_size=200", "--threads", "1")
EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def run_and_analyze(folder: Path, *store: str) -> None:
    folder.mkdir()
    ran = hw1track("run", EXPERIMENT, *TINY, *store, cwd=folder)
    assert ran.returncode == 0, ran.stderr
    drawn = hw1track("analyze", EXPERIMENT, *store, cwd=folder)
    assert drawn.returncode == 0, drawn.stderr


def served_file(server, run_id: str, path: str) -> Path:
    """Where the server stored an artifact: <destination>/<experiment id>/<run id>/artifacts/<path>."""
    found = list(server.artifacts.glob(f"*/{run_id}/artifacts/{path}"))
    assert len(found) == 1, f"{path} of run {run_id} not in {server.artifacts}"
    return found[0]


@pytest.mark.slow
def test_run_and_analyze_through_a_tracking_server(tracking_server, tmp_path):  # noqa: F811
    server = tracking_server
    run_and_analyze(tmp_path / "client", "--tracking-uri", server.uri)

    reader = StoreReader(server.uri)
    parent = reader.latest_parent(EXPERIMENT)
    children = reader.children(parent, status=None)
    assert parent.info.status == "FINISHED" and parent.info.artifact_uri.startswith("mlflow-artifacts:")
    # the quick preset's two replicates of each CNN, and the claims analyze logged, all through the server
    assert [c.info.run_name for c in children] == ["cnn1", "cnn2", "cnn3", "cnn1#1", "cnn2#1", "cnn3#1"]
    assert "claims.json" in reader.artifacts(parent)
    for child in children:
        assert child.info.status == "FINISHED"
        assert set(EPOCH_METRICS) <= set(child.data.metrics)
        assert [m.step for m in reader.client.get_metric_history(child.info.run_id, "test_acc")] == [0, 1]
        weights = served_file(server, child.info.run_id, "weights/final.pt")
        assert weights.stat().st_size > 50_000  # 25k float32 parameters

    figures = reader.artifacts(parent, "figures")
    assert figures and all(p.endswith(".png") for p in figures)
    for path in figures:
        stored = served_file(server, parent.info.run_id, path)
        assert stored.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert reader.download(parent, path, tmp_path / "downloaded").read_bytes() == stored.read_bytes()
    served_config = served_file(server, parent.info.run_id, "run_config.json")
    assert EXPERIMENT in served_config.read_text()

    client = tmp_path / "client"
    assert {p.name for p in client.iterdir()} == {"figures"}  # no mlflow.db, mlruns/ or mlartifacts/ here

    page = tmp_path / "report.html"
    reported = hw1track("report", "--tracking-uri", server.uri, "--out", str(page), cwd=client)
    assert reported.returncode == 0, reported.stderr
    link = f"{server.uri}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    assert link in page.read_text()  # a server's report points at its runs in the UI

    run_and_analyze(tmp_path / "local")  # the same study against the default local SQLite store
    local = StoreReader(f"sqlite:///{tmp_path / 'local' / 'mlflow.db'}")
    local_figures = local.artifacts(local.latest_parent(EXPERIMENT), "figures")
    assert {Path(p).name for p in figures} == {Path(p).name for p in local_figures}
