"""Faults of a study on a real Ray cluster: a worker or the driver killed with SIGKILL, a cluster that has stopped.

Nothing is mocked: the study runs through the command line on a loopback
cluster (`ray start --head`) into a real `mlflow server`, and the test kills
real processes, found as a user would find them: every run records the pid of
the process that writes it (`hw1track.pid`), which for a child is the Ray
worker training it. Each test trains settings of its own, so that no model of
one is reused by another in the shared server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from servers import LOOPBACK, free_port, tracking_server  # noqa: F401
from test_ray_executor import (CHILDREN, EXPERIMENT, FINAL, MODELS, _own_children, pinned_code_version,  # noqa: F401
                               ray_cluster)

from conftest import hw1track
from hw1track.tracking.names import TAG_PID, TAG_REUSED_PREFIX, TAG_ROLE
from hw1track.tracking.processes import process_alive
from hw1track.tracking.query import StoreReader, replicate
from hw1track.tracking.store import mlflow_experiment_name

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

POLL_SECONDS = 0.2
RUN_TIMEOUT = 600.0
WORKERS_GONE_TIMEOUT = 60.0  # Ray stops the workers of a driver that died once it notices the driver is gone


def _settings(epochs: int) -> list[str]:
    """part1_3c_i long enough (seconds per model) for the test to see a model RUNNING and kill its process."""
    return [arg for s in (f"epochs={epochs}", "train_size=6000", "test_size=1000") for arg in ("--set", s)]


def _started(address: str, uri: str, cwd: Path, settings: list[str], seeds: int) -> subprocess.Popen:
    """`hw1track run` through Ray, in its own session, so that killing it touches nothing else."""
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "hw1track.cli", "run", EXPERIMENT, *settings, "--seeds", str(seeds),
               "--executor", "ray", "--ray-address", address, "--tracking-uri", uri]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _runs(client: MlflowClient, query: str) -> list[Run]:
    experiment = client.get_experiment_by_name(mlflow_experiment_name(EXPERIMENT))
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time ASC"])


def _wait_for(what: str, found, process: subprocess.Popen | None = None, timeout: float = RUN_TIMEOUT):
    """Poll `found()` until it returns something; the study `process` ending first means there was nothing to kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := found():
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the study ended before {what}:\n{process.stderr.read()}")
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"no {what} within {timeout:.0f}s")


def _parent_since(client: MlflowClient, since_ms: int) -> Run | None:
    parents = [run for run in _runs(client, f"tags.`{TAG_ROLE}` = 'parent'") if run.info.start_time >= since_ms]
    return parents[-1] if parents else None


def _children(client: MlflowClient, parent_id: str, status: str) -> list[Run]:
    return _runs(client, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' and attributes.status = '{status}'")


def _workers_stopped(client: MlflowClient, parent_id: str) -> bool:
    """Whether every worker that opened a child of `parent_id` has exited; read twice, a second apart, so that
    a worker between two models, or one opening a child meanwhile, is seen."""
    for _ in range(2):
        children = _runs(client, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'")
        if any(process_alive(int(run.data.tags[TAG_PID])) for run in children):
            return False
        time.sleep(1)
    return True


def test_a_worker_killed_mid_task_is_retried_and_each_configuration_ends_with_one_finished_child(
        ray_cluster, tracking_server, tmp_path):  # noqa: F811
    client, since = MlflowClient(tracking_server.uri), int(time.time() * 1000)
    process = _started(ray_cluster, tracking_server.uri, tmp_path / "driver", _settings(epochs=8), seeds=2)
    try:
        parent = _wait_for("a parent run", lambda: _parent_since(client, since), process)
        victim = _wait_for("a RUNNING child", lambda: _children(client, parent.info.run_id, "RUNNING"), process)[0]
        worker = int(victim.data.tags[TAG_PID])
        os.kill(worker, signal.SIGKILL)  # the Ray worker training this child, as the OOM killer would
        _, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr

    reader = StoreReader(tracking_server.uri)
    parent = reader.client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    every_child = _runs(client, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'")
    assert reader.client.get_run(victim.info.run_id).info.status == "KILLED"  # ended by the retried task
    assert "RUNNING" not in {run.info.status for run in every_child}
    finished = [run.info.run_name for run in every_child if run.info.status == "FINISHED"]
    assert sorted(finished) == CHILDREN  # exactly one per configuration
    for run in _own_children(reader, parent):
        assert set(FINAL) <= set(run.data.metrics), run.info.run_name
    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    assert sorted(curve["replicate"].unique()) == [0, 1] and len(curve) == 2 * (curve["replicate"] == 0).sum()


def test_a_driver_killed_mid_study_leaves_nothing_running_after_the_rerun_which_trains_only_what_is_missing(
        ray_cluster, tracking_server, tmp_path):  # noqa: F811
    client, since = MlflowClient(tracking_server.uri), int(time.time() * 1000)
    settings, driver = _settings(epochs=6), tmp_path / "driver"
    process = _started(ray_cluster, tracking_server.uri, driver, settings, seeds=3)  # 3 tasks on 2 CPUs
    try:
        first = _wait_for("a parent run", lambda: _parent_since(client, since), process)
        _wait_for("a FINISHED child", lambda: _children(client, first.info.run_id, "FINISHED"), process)
        os.kill(process.pid, signal.SIGKILL)  # the driver: no chance to end its runs or cancel its tasks
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    _wait_for("the killed driver's workers to stop", lambda: _workers_stopped(client, first.info.run_id),
              timeout=WORKERS_GONE_TIMEOUT)
    finished_before = {run.info.run_id for run in _children(client, first.info.run_id, "FINISHED")}

    rerun = hw1track("run", EXPERIMENT, *settings, "--seeds", "3", "--executor", "ray", "--ray-address",
                     ray_cluster, "--tracking-uri", tracking_server.uri, cwd=driver)
    assert rerun.returncode == 0, rerun.stderr
    assert "marked KILLED, its process is gone" in rerun.stderr
    assert _runs(client, "attributes.status = 'RUNNING'") == []
    assert client.get_run(first.info.run_id).info.status == "KILLED"

    reader = StoreReader(tracking_server.uri)
    parent = reader.latest_parent(EXPERIMENT)
    assert parent.info.run_id != first.info.run_id and parent.info.status == "FINISHED"
    reused = {value for key, value in parent.data.tags.items() if key.startswith(TAG_REUSED_PREFIX)}
    assert reused == finished_before  # every model the killed study finished, and nothing trained twice
    trained = _own_children(reader, parent)
    assert len(trained) == 9 - len(finished_before)
    children = reader.children(parent)
    assert sorted((run.info.run_name.split("#")[0], replicate(run)) for run in children) == sorted(
        (name, r) for name in MODELS for r in range(3))


def test_auto_pointing_at_a_cluster_that_has_stopped_fails_in_seconds_with_one_line(
        tracking_server, tmp_path):  # noqa: F811
    ray_temp = tmp_path / "ray-temp"  # Ray's temp folder ($RAY_TMPDIR), where `ray start` records its address
    (ray_temp / "ray").mkdir(parents=True)
    (ray_temp / "ray" / "ray_current_cluster").write_text(f"{LOOPBACK}:{free_port()}")  # nobody listens there
    driver = tmp_path / "driver"
    driver.mkdir()
    started = time.monotonic()
    result = hw1track("run", EXPERIMENT, "--executor", "ray", "--ray-address", "auto", "--tracking-uri",
                      tracking_server.uri, cwd=driver, env={"RAY_TMPDIR": str(ray_temp)})
    took = time.monotonic() - started
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:" in result.stderr
    assert took < 60, took  # imports take seconds on a busy machine; the probe gives up after 5 s
    assert list(driver.iterdir()) == []
