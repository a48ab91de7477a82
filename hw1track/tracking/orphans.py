"""Runs left RUNNING by a process that is gone, and marking them KILLED.

Ctrl-C, SIGTERM and exceptions end their runs themselves; `kill -9`, a crash of
the interpreter or a lost machine do not. `hw1track run` clears such runs of the
experiment it starts, and `hw1track doctor` those of every experiment, so the
store never keeps showing a dead run as RUNNING. A Ray task retried after its
worker died ends the runs of its dead attempt itself (`earlier_attempts`).
What the dead process had buffered but not yet written is lost; everything it
had flushed stays.
"""

from __future__ import annotations

import time

from mlflow.entities import Run, RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hw1track.tracking.names import (EXPERIMENT_PREFIX, TAG_EXPERIMENT, TAG_HOST, TAG_MODEL, TAG_PID, TAG_REPLICATE,
                                     TAG_ROLE)
from hw1track.tracking.processes import writer_gone
from hw1track.tracking.store import Store, mlflow_experiment_name

STALE_AFTER_HOURS = 24.0  # a RUNNING run of another host counts as orphaned after this long


def _experiment_ids(store: Store, experiment: str | None) -> list[str]:
    if experiment is not None:
        found = store.client.get_experiment_by_name(mlflow_experiment_name(experiment))
        return [found.experiment_id] if found else []
    return [e.experiment_id for e in store.client.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'")]


def find_orphans(store: Store, experiment: str | None = None,
                 stale_after_hours: float = STALE_AFTER_HOURS) -> list[Run]:
    """RUNNING runs of `experiment` (else of every hw1 experiment) whose process is gone, oldest first."""
    ids = _experiment_ids(store, experiment)
    if not ids:
        return []
    running = store.client.search_runs(ids, "attributes.status = 'RUNNING'", order_by=["attributes.start_time ASC"],
                                       max_results=50_000)
    now = int(time.time() * 1000)
    return [run for run in running
            if writer_gone(run.data.tags, run.info.start_time, now, stale_after_hours * 3600)]


def earlier_attempts(store: Store, parent_run_id: str, replicate: int, model: str | None = None) -> list[Run]:
    """The RUNNING children of replicate `replicate` (and of model `model`, if given) under `parent_run_id`:
    left by an earlier attempt at them.

    Where one task trains each replicate, or each model of a replicate
    (`ray_executor`), a task that starts while such children exist is a retry,
    and the attempt that opened them is gone: Ray retries a task only once its
    worker has died. They are found by their parent, replicate and model, not
    by their process, which another node's task cannot check; and by tags that
    the run was created with, not by its params, which a worker killed a moment
    after creating it never logged.
    """
    parent = store.client.get_run(parent_run_id)
    query = (f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and tags.`{TAG_REPLICATE}` = '{replicate}' "
             f"and attributes.status = 'RUNNING'")
    if model is not None:
        query += f" and tags.`{TAG_MODEL}` = '{model}'"
    return store.client.search_runs([parent.info.experiment_id], query, max_results=50_000)


def mark_killed(store: Store, runs: list[Run]) -> None:
    for run in runs:
        store.client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED),
                                    end_time=int(time.time() * 1000))


def describe(run: Run) -> str:
    tags = run.data.tags
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000))
    owner = f"pid {tags[TAG_PID]} on {tags.get(TAG_HOST)}" if TAG_PID in tags else "no process recorded"
    return (f"{tags.get(TAG_EXPERIMENT, '?')} {tags.get(TAG_ROLE, 'run')} {run.info.run_name} "
            f"({run.info.run_id}), started {started}, {owner}")
