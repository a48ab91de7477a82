"""A study on a real Ray cluster (`ray start --head` on loopback) logging to a real `mlflow server` or a local store.

Everything goes through the command line, as a user would run it: one Ray
task per (experiment, replicate), children nested under the parent the driver
opened, the same final numbers as in-process, and one-line refusals for what
cannot work. The cluster's processes start in a folder of their own, so a
relative store path of the driver would break if the tasks used it as given.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import hw1track
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from servers import LOOPBACK, free_port, tracking_server  # noqa: F401
from test_reliability import TINY

from hw1track import config as configs
from hw1track.study.discovery import get_experiment
from hw1track.study.invocation import run_experiment
from hw1track.study.ray_executor import INSTALL
from hw1track.tracking.code_version import ENV as CODE_VERSION_ENV
from hw1track.tracking.query import StoreReader, replicate
from hw1track.tracking.store import Store

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

START_TIMEOUT = 120.0
EXPERIMENT = "part1_3c_i"  # two models per replicate and a parent table that spans replicates
SETTINGS = [arg for setting in TINY[EXPERIMENT] for arg in ("--set", setting)]
FINAL = ("train_loss", "train_acc", "test_loss", "test_acc")
# A loopback cluster needs no tokens; left unset, Ray turns them on once any earlier local cluster saved one.
CLUSTER_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(autouse=True)
def pinned_code_version(monkeypatch):
    monkeypatch.setenv(CODE_VERSION_ENV, "ray-tests")  # inherited by the command line and the cluster's workers
    for key, value in CLUSTER_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[str]:
    """A two-CPU Ray cluster on loopback, started by `ray start --head --block`; yields its address.

    It runs in its own session and is stopped with SIGKILL to that session's process group: on SIGTERM,
    `ray start --block` drains for 30 s first. Its idle workers exit by themselves once the raylet is gone.
    """
    folder = tmp_path_factory.mktemp("ray-cluster")
    port = free_port()
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", LOOPBACK,
               "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"]
    with open(folder / "ray.log", "w") as log:
        process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, **CLUSTER_ENV})
    try:
        _wait_for_port(port, process, folder / "ray.log")
        yield f"{LOOPBACK}:{port}"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the Ray head did not listen on {port} within {START_TIMEOUT:.0f}s:\n{log.read_text()}")


def _through_ray(address: str, uri: str, cwd: Path, *more: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return hw1track("run", EXPERIMENT, *SETTINGS, "--seeds", "2", "--executor", "ray", "--ray-address", address,
                    "--tracking-uri", uri, *more, cwd=cwd)


def _own_children(reader: StoreReader, parent) -> list:
    return [run for run in reader.children(parent) if run.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id]


def _finals(reader: StoreReader, parent) -> dict[str, dict[str, float]]:
    return {run.info.run_name: {key: run.data.metrics[key] for key in FINAL} for run in reader.children(parent)}


def test_a_study_through_ray_is_one_parent_in_the_shared_server_with_the_in_process_numbers(
        ray_cluster, tracking_server, tmp_path):  # noqa: F811
    result = _through_ray(ray_cluster, tracking_server.uri, tmp_path / "driver")
    assert result.returncode == 0, result.stderr
    assert "[study] part1_3c_i (1 of 1): tasks 2 done, 0 running, 0 queued" in result.stderr

    reader = StoreReader(tracking_server.uri)
    parent = reader.latest_parent(EXPERIMENT)
    assert parent.info.status == "FINISHED" and parent.data.params["seeds"] == "2"
    children = _own_children(reader, parent)  # one per (configuration, replicate), nested as in-process
    assert sorted(run.info.run_name for run in children) == ["bs1000", "bs1000#1", "bs64", "bs64#1"]
    assert {run.info.status for run in children} == {"FINISHED"}
    assert sorted(replicate(run) for run in children) == [0, 0, 1, 1]
    curve = pd.read_csv(reader.download(parent, "interpolation.csv"))
    assert sorted(curve["replicate"].unique()) == [0, 1] and len(curve) == 2 * (curve["replicate"] == 0).sum()

    analyzed = hw1track("analyze", EXPERIMENT, "--tracking-uri", tracking_server.uri, "--out", str(tmp_path / "f"),
                        cwd=tmp_path)
    assert analyzed.returncode == 0, analyzed.stderr
    assert list((tmp_path / "f" / EXPERIMENT).glob("*.png"))

    # the same experiment and seeds in this process, into a store of its own (the server's would be reused)
    experiment = get_experiment(EXPERIMENT)
    local_uri = f"sqlite:///{tmp_path / 'local' / 'mlflow.db'}"
    local_id = run_experiment(experiment, "quick", configs.resolve(experiment.presets, "quick", TINY[EXPERIMENT]),
                              Store(local_uri), torch.device("cpu"), threads=1, seeds=2)
    local_reader = StoreReader(local_uri)
    local = local_reader.client.get_run(local_id)
    through_ray, in_process = _finals(reader, parent), _finals(local_reader, local)
    assert through_ray.keys() == in_process.keys()
    for name, metrics in in_process.items():
        for key, value in metrics.items():
            assert math.isclose(through_ray[name][key], value, rel_tol=1e-6, abs_tol=1e-9), (name, key)
    local_curve = pd.read_csv(local_reader.download(local, "interpolation.csv"))
    assert list(local_curve.columns) == list(curve.columns)
    pd.testing.assert_frame_equal(curve, local_curve, rtol=1e-6)


def test_a_relative_sqlite_store_works_with_a_cluster_on_this_machine(ray_cluster, tmp_path):
    driver = tmp_path / "driver"
    result = _through_ray(ray_cluster, "sqlite:///store/mlflow.db", driver)  # relative to the driver's folder
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr
    reader = StoreReader(f"sqlite:///{driver / 'store' / 'mlflow.db'}")
    parent = reader.latest_parent(EXPERIMENT)
    children = _own_children(reader, parent)
    assert len(children) == 4 and {run.info.status for run in children} == {"FINISHED"}

    again = _through_ray(ray_cluster, "sqlite:///store/mlflow.db", driver)  # an identical study trains nothing
    assert again.returncode == 0, again.stderr
    assert "an identical run already finished" in again.stderr


def test_a_local_store_with_a_remote_cluster_is_refused_in_one_line(tmp_path):
    result = hw1track("run", EXPERIMENT, "--executor", "ray", "--ray-address", "192.0.2.77:6379", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "a Ray cluster needs a tracking server every node can reach" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns/


def test_an_unreachable_cluster_fails_in_seconds_with_one_line(tracking_server, tmp_path):  # noqa: F811
    started = time.monotonic()
    result = hw1track("run", EXPERIMENT, "--executor", "ray", "--ray-address", f"{LOOPBACK}:{free_port()}",
                      "--tracking-uri", tracking_server.uri, cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "cannot reach the Ray cluster" in result.stderr
    assert took < 60, took  # imports take seconds on a busy machine; the probe gives up after 5 s


def test_without_ray_the_executor_says_how_to_install_it(tmp_path):
    hidden = "import sys; sys.modules['ray'] = None; from hw1track.cli import main; main()"  # import ray fails
    result = subprocess.run([sys.executable, "-c", hidden, "run", EXPERIMENT, "--executor", "ray"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stderr.strip() == f"hw1track: error: {INSTALL}"
    assert list(tmp_path.iterdir()) == []
