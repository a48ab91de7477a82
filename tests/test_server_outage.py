"""A tracking server that goes away mid-run: a restart is ridden out, a lost server ends the run in one line.

A real `mlflow server` is killed with SIGKILL while `hw1track run` trains a
sweep against it. Started again on the same port and store within the outage
that requests are retried for (`server_retries`), the run completes as if
nothing happened; never started again, the run fails within that outage plus
the time to notice it, with one line, and a rerun after the server is back
completes the sweep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from servers import RestartableServer, restartable_server

from hw1track.tracking import server_retries
from hw1track.tracking.code_version import ENV as CODE_VERSION_ENV
from hw1track.tracking.names import TAG_ROLE
from hw1track.tracking.query import StoreReader

EXPERIMENT = "part1_1a"
EPOCHS = 8000  # about 10 s per model and thousands of metric values: the writer is busy when the server goes
SWEEP = ("run", EXPERIMENT, "--preset", "quick", "--seeds", "1", "--set", "targets=sinc", "--set", f"epochs={EPOCHS}",
         "--threads", "1")
MODELS = 3
OUTAGE_SECONDS = 14  # for the run that loses its server: 0 + 2 + 4 + 8 s of back-off over 4 retries
NOTICE_SECONDS = 60  # besides the outage: reaching the next request, ending the runs, exiting
MLFLOW_HTTP = (server_retries.RETRIES, server_retries.FACTOR, server_retries.JITTER, server_retries.TIMEOUT)


@pytest.fixture(autouse=True)
def own_retry_settings(monkeypatch):
    """Settings an earlier test left in this process would be inherited by the command line and override its own."""
    monkeypatch.setenv(CODE_VERSION_ENV, "server-outage-tests")
    for name in (*MLFLOW_HTTP, server_retries.OUTAGE_ENV):
        monkeypatch.delenv(name, raising=False)


def _environment(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in MLFLOW_HTTP}, **extra}


def _start(folder: Path, uri: str, **env: str) -> subprocess.Popen:
    folder.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "hw1track.cli", *SWEEP, "--tracking-uri", uri], cwd=folder,
                            env=_environment(**env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _runs(reader: StoreReader) -> list:
    experiment_id = reader.store.experiment_id(EXPERIMENT)
    return [] if experiment_id is None else list(
        reader.client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000))


def _children(runs: list, status: str | None = None) -> list:
    return [r for r in runs if r.data.tags.get(TAG_ROLE) == "child" and status in (None, r.info.status)]


def _wait_mid_sweep(reader: StoreReader, process: subprocess.Popen, timeout: float = 240) -> None:
    """Until a model has finished and the next one is training (and has logged metrics)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        children = _children(_runs(reader))
        if _children(children, "FINISHED") and any(r.data.metrics for r in _children(children, "RUNNING")):
            return
        time.sleep(0.2)
    pytest.fail("the sweep never reached its second model")


def _assert_complete(reader: StoreReader) -> None:
    """The newest parent FINISHED with every model FINISHED and every epoch of its history stored."""
    parent = reader.latest_parent(EXPERIMENT)
    children = reader.children(parent)
    assert parent.info.status == "FINISHED" and len(children) == MODELS
    for child in children:
        assert child.info.status == "FINISHED"
        steps = [m.step for m in reader.client.get_metric_history(child.info.run_id, "train_loss")]
        assert sorted(steps) == list(range(EPOCHS + 1))


@pytest.mark.slow
def test_a_server_restarted_mid_run_costs_nothing(tmp_path):
    with restartable_server(tmp_path / "server") as server:
        reader = StoreReader(server.uri)
        process = _start(tmp_path / "client", server.uri)
        _wait_mid_sweep(reader, process)
        server.kill()
        killed = time.monotonic()
        time.sleep(3)
        server.start()
        outage = time.monotonic() - killed
        assert process.poll() is None  # it was waiting for the server, not failed
        out, err = process.communicate(timeout=240)
        print(f"outage {outage:.1f} s; run done {time.monotonic() - killed:.1f} s after the kill")
        assert process.returncode == 0, err
        assert "Traceback" not in err
        _assert_complete(reader)
        assert not [r for r in _runs(reader) if r.info.status != "FINISHED"]


@pytest.mark.slow
def test_a_server_lost_for_good_fails_the_run_in_one_line_and_a_rerun_completes(tmp_path):
    server = RestartableServer(tmp_path / "server")
    server.start()
    try:
        reader = StoreReader(server.uri)
        process = _start(tmp_path / "client", server.uri, **{server_retries.OUTAGE_ENV: str(OUTAGE_SECONDS)})
        _wait_mid_sweep(reader, process)
        finished_before = {r.info.run_id for r in _children(_runs(reader), "FINISHED")}
        server.kill()
        killed = time.monotonic()
        out, err = process.communicate(timeout=OUTAGE_SECONDS + NOTICE_SECONDS + 60)
        failed_after = time.monotonic() - killed
        print(f"failed {failed_after:.1f} s after the kill: {err}")
        assert process.returncode == 1, err
        errors = [line for line in err.splitlines() if not line.startswith(f"[{EXPERIMENT}] ")]  # not progress
        assert len(errors) == 1 and errors[0].startswith("hw1track: error: lost the tracking server"), err
        assert server.uri in err and "Traceback" not in err
        assert OUTAGE_SECONDS <= failed_after <= OUTAGE_SECONDS + NOTICE_SECONDS

        server.start()
        left = [r for r in _runs(reader) if r.info.status == "RUNNING"]
        assert len(left) == 2  # the parent and the model in training: the server was gone when they ended
        rerun = _start(tmp_path / "client", server.uri)
        out, err = rerun.communicate(timeout=240)
        assert rerun.returncode == 0, err
        assert err.count("marked KILLED, its process is gone") == 2
        assert not [r for r in _runs(reader) if r.info.status == "RUNNING"]
        _assert_complete(reader)
        assert finished_before <= {r.info.run_id for r in reader.children(reader.latest_parent(EXPERIMENT))}
    finally:
        server.kill()
