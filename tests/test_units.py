"""The units an invocation splits into for an executor that runs them apart, and a unit run twice (a retry).

Ray is not needed here: `train_unit` is what each Ray task runs, called in this
process against a real store and real MNIST. `tests/test_ray_executor.py` runs
the same units on a real cluster.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from test_reliability import TINY

from hw1track import config as configs
from hw1track.study.discovery import discover, get_experiment
from hw1track.study.invocation import Invocation, model_scope, opened_parent, train_unit
from hw1track.study.units import Unit, independent_models, units
from hw1track.tracking.code_version import ENV as CODE_VERSION_ENV
from hw1track.tracking.orphans import earlier_attempts
from hw1track.tracking.store import Store

# Experiments whose models share nothing but the data: they hand them to `RunContext.train_classifiers`.
INDEPENDENT = {"part1_1b": ("cnn1", "cnn2", "cnn3"), "part1_3b": ("dense6", "dense10")}


@pytest.fixture(autouse=True)
def pinned_code_version(monkeypatch):
    monkeypatch.setenv(CODE_VERSION_ENV, "units-tests")


def _config(name: str):
    experiment = get_experiment(name)
    return experiment, configs.resolve(experiment.presets, "quick", TINY[name])


@pytest.mark.parametrize("name", sorted(discover()))
def test_only_models_trained_apart_from_each_other_are_units_of_their_own(name):
    experiment, config = _config(name)
    assert independent_models(experiment, config) == INDEPENDENT.get(name)
    planned = units(experiment, config, seeds=3)
    models = INDEPENDENT.get(name, (None,))
    assert planned == [Unit(replicate, model) for replicate in range(3) for model in models]
    assert len(set(planned)) == len(planned)


def _invocation(name: str, config, uri: str, reuse: bool) -> Invocation:
    return Invocation(name, "quick", config, 1, "cpu", uri, model_scope("quick", config), "units-test", reuse, 1, None)


@pytest.mark.slow
@pytest.mark.parametrize("reuse", [True, False], ids=["reuse", "force"])
def test_a_unit_run_again_under_its_parent_reuses_what_the_first_attempt_finished(reuse, store_uri, reader):
    """As a Ray task retried after its worker died: the first attempt finished one model of the replicate and
    died; the retry trains the rest, with --force too, so each configuration has one FINISHED child."""
    experiment, config = _config("part1_3b")
    store = Store(store_uri)
    invocation = _invocation("part1_3b", config, store_uri, reuse)
    with opened_parent(experiment, invocation, store) as parent:
        train_unit(invocation, parent.run_id, Unit(0, "dense6"), None)  # the attempt that died after one model
        first = {run.info.run_name: run.info.run_id for run in reader.children(reader.client.get_run(parent.run_id))}
        train_unit(invocation, parent.run_id, Unit(0), None)  # its retry, a whole replicate
    assert list(first) == ["dense6"]
    children = reader.client.search_runs([parent.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.run_id}'")
    assert sorted(run.info.run_name for run in children) == ["dense10", "dense6"]
    assert {run.info.status for run in children} == {"FINISHED"}
    assert next(run.info.run_id for run in children if run.info.run_name == "dense6") == first["dense6"]


@pytest.mark.slow
def test_a_child_whose_worker_died_before_its_params_were_logged_is_found_by_the_retry(store_uri):
    """A worker killed between creating its child run and logging the child's params: the retry must still find
    that RUNNING child by its replicate and model, which the run was created with."""
    experiment, config = _config("part1_3b")
    store = Store(store_uri)
    with opened_parent(experiment, _invocation("part1_3b", config, store_uri, reuse=True), store) as parent:
        dies = textwrap.dedent(f"""
            import os, signal
            from hw1track.tracking import runs
            from hw1track.tracking.store import Store
            runs.TrackedRun.log_params = lambda run, params: os.kill(os.getpid(), signal.SIGKILL)  # the fault
            parent = runs.ParentRun.attach(Store({store_uri!r}), {parent.run_id!r})
            with parent.child("dense6#1", {{"model": "dense6", "replicate": 1}}):
                pass
        """)
        died = subprocess.run([sys.executable, "-c", dies], capture_output=True, text=True, timeout=300)
        assert died.returncode == -signal.SIGKILL, died.stderr
        left = earlier_attempts(store, parent.run_id, 1, "dense6")
        assert [run.info.run_name for run in left] == ["dense6#1"]
        assert left[0].info.status == "RUNNING" and left[0].data.params == {}  # it died before its params
        assert earlier_attempts(store, parent.run_id, 1, "dense10") == []  # another model's task is not its retry
        assert earlier_attempts(store, parent.run_id, 0) == []  # nor is another replicate's
        store.client.set_terminated(left[0].info.run_id, "KILLED")
