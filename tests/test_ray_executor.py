"""A study on a real Ray cluster (`ray start --head` on loopback) logging to a real `mlflow server` or a local store.

Everything goes through the command line, as a user would run it: one Ray
task per (experiment, replicate), or per model where an experiment's models are
independent, children nested under the parent the driver opened, the same
final numbers as in-process, and one-line refusals for what cannot work.
The cluster's processes start in a folder of their own, so a relative store
path of the driver would break if the tasks used it as given.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import hw1track
from ray_overhead import CLUSTER_ENV
from ray_overhead import ray_cluster as started_cluster
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from servers import LOOPBACK, free_port, tracking_server  # noqa: F401
from test_reliability import TINY

from hw1track import config as configs
from hw1track.study.discovery import discover, get_experiment
from hw1track.study.invocation import run_experiment
from hw1track.study.ray_executor import INSTALL
from hw1track.tracking.code_version import ENV as CODE_VERSION_ENV
from hw1track.tracking.query import StoreReader, replicate
from hw1track.tracking.store import Store

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

EXPERIMENT = "part1_3c_i"  # two models per replicate and a parent table that spans replicates
SETTINGS = [arg for setting in TINY[EXPERIMENT] for arg in ("--set", setting)]
FINAL = ("train_loss", "train_acc", "test_loss", "test_acc")
MODELS = ("bs64", "bs1000", "bs1000-independent-init")  # of each replicate
CHILDREN = sorted(f"{model}{suffix}" for model in MODELS for suffix in ("", "#1"))  # of two replicates


@pytest.fixture(autouse=True)
def pinned_code_version(monkeypatch):
    monkeypatch.setenv(CODE_VERSION_ENV, "ray-tests")  # inherited by the command line and the cluster's workers
    for key, value in CLUSTER_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[str]:
    """A two-CPU Ray cluster on loopback (`ray start --head`, as the Ray benchmark starts it); yields its address."""
    log = tmp_path_factory.mktemp("ray-cluster") / "ray.log"
    with started_cluster(2, {**os.environ, **CLUSTER_ENV}, log) as (address, _):
        yield address


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
    assert "[study] experiments 1 of 1 done: tasks 2 done, 0 running, 0 queued" in result.stderr

    reader = StoreReader(tracking_server.uri)
    parent = reader.latest_parent(EXPERIMENT)
    assert parent.info.status == "FINISHED" and parent.data.params["seeds"] == "2"
    children = _own_children(reader, parent)  # one per (configuration, replicate), nested as in-process
    assert sorted(run.info.run_name for run in children) == CHILDREN
    assert {run.info.status for run in children} == {"FINISHED"}
    assert sorted(replicate(run) for run in children) == [0, 0, 0, 1, 1, 1]
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


# `run all` at a few examples and epochs: keys apply to the experiments that have them
ALL_SETTINGS = ("epochs=1", "train_size=256", "test_size=256", "max_epochs=2", "n_trainings=3", "sinc_iterations=40",
                "mnist_epochs=1", "snapshot_every=1", "trainings=2", "batch_sizes=64,128", "sharpness_examples=64",
                "sharpness_maxiter=2")
INDEPENDENT_MODELS = {"part1_1b": 3, "part1_3b": 11}  # one task per model (quick preset); one per replicate elsewhere


def test_a_whole_study_goes_to_the_cluster_at_once_with_a_task_per_independent_model(ray_cluster, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = [arg for setting in ALL_SETTINGS for arg in ("--set", setting)]
    result = hw1track("run", "all", *settings, "--seeds", "2", "--executor", "ray", "--ray-address", ray_cluster,
                      "--tracking-uri", uri, cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    names = list(discover())
    tasks = sum(2 * INDEPENDENT_MODELS.get(name, 1) for name in names)
    progress = [line for line in result.stderr.splitlines() if line.startswith("[study]")]
    assert progress[-1] == f"[study] experiments {len(names)} of {len(names)} done: tasks {tasks} done, 0 running, " \
                           "0 queued"
    # every experiment's tasks were on the cluster before the first experiment had ended
    assert any(line.startswith("[study] experiments 0 of") and _tasks_in(line) == tasks for line in progress), progress
    finished = [line for line in result.stdout.splitlines() if ": finished in " in line and line.endswith(f"({uri})")]
    assert len(finished) == len(names), result.stdout

    reader = StoreReader(uri)
    for name in names:
        parent = reader.latest_parent(name)
        assert parent.info.status == "FINISHED", name
        children = _own_children(reader, parent)
        assert {run.info.status for run in children} == {"FINISHED"}, name
        assert sorted({replicate(run) for run in children}) == [0, 1], name

    # a model trained as a task of its own gives the numbers it gives in process, sweep and all
    experiment = get_experiment("part1_3b")
    fields = {f.name for f in dataclasses.fields(experiment.presets["quick"])}
    config = configs.resolve(experiment.presets, "quick", [s for s in ALL_SETTINGS if s.split("=")[0] in fields])
    local_uri = f"sqlite:///{tmp_path / 'local' / 'mlflow.db'}"
    local_id = run_experiment(experiment, "quick", config, Store(local_uri), torch.device("cpu"), threads=1, seeds=2)
    local_reader = StoreReader(local_uri)
    through_ray = _finals(reader, reader.latest_parent("part1_3b"))
    in_process = _finals(local_reader, local_reader.client.get_run(local_id))
    assert len(in_process) == 2 * INDEPENDENT_MODELS["part1_3b"] and through_ray.keys() == in_process.keys()
    for name, metrics in in_process.items():
        for key, value in metrics.items():
            assert math.isclose(through_ray[name][key], value, rel_tol=1e-6, abs_tol=1e-9), (name, key)


def _tasks_in(progress_line: str) -> int:
    """done + running + queued (+ failed) of one `[study]` line."""
    counts = re.findall(r"(\d+) (?:done|running|queued|failed)", progress_line.split(":", 1)[1])
    return sum(int(count) for count in counts)


def test_a_relative_sqlite_store_works_with_a_cluster_on_this_machine(ray_cluster, tmp_path):
    driver = tmp_path / "driver"
    result = _through_ray(ray_cluster, "sqlite:///store/mlflow.db", driver)  # relative to the driver's folder
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr
    reader = StoreReader(f"sqlite:///{driver / 'store' / 'mlflow.db'}")
    parent = reader.latest_parent(EXPERIMENT)
    children = _own_children(reader, parent)
    assert len(children) == 6 and {run.info.status for run in children} == {"FINISHED"}

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
