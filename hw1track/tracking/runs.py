"""Runs: writing into one, nesting a model's run under its invocation's, and reusing a finished one.

A parent run stands for one invocation of an experiment and a child run for one
trained model. Every run records the process that opened it (see `processes`),
so a run left RUNNING by `kill -9` can be recognised and marked KILLED later,
and ends with a status that says how it ended (see `ending`).

Metrics are buffered, because one synchronous `log_metric` costs milliseconds
against SQLite, more than a small model's step. A local SQLite store takes them
in bulk in the training process (`sqlite_metrics`, a few µs per row); a
tracking server gets them from a writer process beside training
(`metric_writer`), so that HTTP round trips never stall a step, nor a server
that is restarting (`server_retries`).

With reuse on, a child whose recipe already FINISHED in the experiment (see
`identity`) is not trained again: the parent links the finished run and hands
out a `ReusedRun`, which can be read but has nothing to write with.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import Timeout as LockTimeout
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, Param, Run, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hw1track.tracking import inputs, metric_writer, server_retries, sqlite_metrics, system_metrics
from hw1track.tracking.ending import ended_with_status, raise_if_signalled
from hw1track.tracking.identity import config_hash, group_hash
from hw1track.tracking.names import (PARAM_MODEL, PARAM_REPLICATE, TAG_CODE_VERSION, TAG_CONFIG_HASH, TAG_EXPERIMENT,
                                     TAG_GROUP, TAG_MODEL, TAG_PRESET, TAG_REPLICATE, TAG_REUSED_PREFIX, TAG_ROLE,
                                     WEIGHTS_ARTIFACT)
from hw1track.tracking.processes import current_process_tags
from hw1track.tracking.store import Store

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request
# Rows per transaction on a local SQLite store. A commit costs about 2 ms (its fsyncs): a row took 7.3 µs
# of wall time in transactions of 1,000 and 5.4 µs in transactions of 10,000 (benchmarks/metric_rows.py).
LOCAL_ROWS_PER_WRITE = 10_000
MAX_PARAMS_PER_BATCH = 100
FLUSH_EVERY_SECONDS = 30.0  # bound on what a hard kill can lose


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrackedRun:
    """One MLflow run: buffered metrics, params, tags and artifacts.

    It is also a `MetricSink`, so the training loop logs into it directly.
    """

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id
        self._pending: list[metric_writer.Row] = []
        self._last_flush = time.monotonic()
        self._writer: metric_writer.MetricWriter | None = None  # set once a full batch has been handed over
        self._local = sqlite_metrics.bulk_writer(client.tracking_uri)  # None unless a local SQLite store

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        raise_if_signalled()
        timestamp = _now_ms()
        self._pending.extend((key, float(value), timestamp, step) for key, value in metrics.items())
        self._maybe_flush()

    def log_series(self, series: Mapping[str, list[float]], first_step: int) -> None:
        raise_if_signalled()
        timestamp = _now_ms()
        for key, values in series.items():
            self._pending.extend((key, float(v), timestamp, first_step + i) for i, v in enumerate(values))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        """Write full batches: into a local store here, to a server through the writer process.

        Runs that log little write in-process when they flush, without starting a writer. Once the server
        is lost (see `server_retries`), training stops here: the run is ended FAILED if the server answers.
        """
        if len(self._pending) >= (MAX_METRICS_PER_BATCH if self._local is None else LOCAL_ROWS_PER_WRITE):
            if self._local is None:
                self._writer = self._writer or metric_writer.writer_for(self.client, MAX_METRICS_PER_BATCH)
        elif time.monotonic() - self._last_flush <= FLUSH_EVERY_SECONDS:
            return
        if self._writer is None:
            self.flush()
        else:
            pending, self._pending = self._pending, []
            self._writer.submit(self.run_id, pending, self._write_here)
            self._last_flush = time.monotonic()
        if server_retries.is_given_up():
            raise server_retries.lost(self.client.tracking_uri)

    def flush(self) -> None:
        """Store everything logged so far, and return only once it is stored (runs end after this)."""
        pending, self._pending = self._pending, []
        if self._writer is None:
            self._write_here(self.run_id, pending)
        else:
            self._writer.submit(self.run_id, pending, self._write_here)
            self._writer.settle(self.run_id, self._write_here)
        self._last_flush = time.monotonic()

    def _write_here(self, run_id: str, rows: Sequence[metric_writer.Row]) -> None:
        if self._local is not None:
            self._local(run_id, rows)
        else:
            metric_writer.write_rows(self.client, run_id, rows, MAX_METRICS_PER_BATCH)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_PARAMS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_inputs(self, datasets: Sequence[DatasetInput]) -> None:
        """MLflow dataset inputs (`inputs.SplitInputs`): the UI's Dataset column."""
        inputs.log_inputs(self.client, self.run_id, datasets)

    def log_json(self, obj: Any, artifact_path: str) -> None:
        self._log_via_tempfile(artifact_path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True)))

    def log_csv(self, frame: Any, artifact_path: str) -> None:
        """A pandas DataFrame as CSV, the format notebooks and spreadsheets read directly."""
        self._log_via_tempfile(artifact_path, lambda p: frame.to_csv(p, index=False))

    def log_state_dict(self, model: torch.nn.Module, artifact_path: str = WEIGHTS_ARTIFACT) -> None:
        """Weights only (a state_dict), readable with torch.load(weights_only=True)."""
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        self._log_via_tempfile(artifact_path, lambda p: torch.save(state, p))

    def log_tensors(self, tensors: Mapping[str, Any], artifact_path: str) -> None:
        """A dict of tensors and plain numbers, saved for torch.load(weights_only=True)."""
        self._log_via_tempfile(artifact_path, lambda p: torch.save(dict(tensors), p))

    def _log_via_tempfile(self, artifact_path: str, write: Any) -> None:
        folder, _, filename = artifact_path.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            write(path)
            self.log_file(path, folder or None)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status, end_time=_now_ms())


@dataclass(frozen=True, eq=False, slots=True)
class ReusedRun:
    """A FINISHED run of an earlier invocation standing in for a model of this one; read, never written.

    It is not a `TrackedRun` with its writers turned off: a writer added to
    `TrackedRun` later would then write into another invocation's run. Here a
    write fails with AttributeError, so callers branch on `isinstance(child, ReusedRun)`.
    The client is there to read the run back (its weights, see `weights.restore_weights`).
    """

    client: MlflowClient
    run: Run

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


class ParentRun(TrackedRun):
    """One invocation of an experiment; its children are the models it trains (or reuses)."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str, experiment: str, preset: str, *,
                 store: Store | None = None, scope: Mapping[str, Any] | None = None, reuse: bool = False,
                 reuse_own: bool = False):
        super().__init__(client, run_id)
        self.experiment_id = experiment_id
        self.experiment = experiment
        self.preset = preset
        self.store = store
        self.scope = dict(scope or {})
        self.reuse = reuse and store is not None
        self.reuse_own = reuse_own and store is not None

    @classmethod
    def attach(cls, store: Store, run_id: str, *, scope: Mapping[str, Any] | None = None,
               reuse: bool = False) -> ParentRun:
        """The parent run `run_id`, opened elsewhere (by the process that hands out the units, see
        `executors`), to nest children under; ending it stays with the process that opened it.

        A child this parent already FINISHED is reused even with `reuse` off
        (--force): only an earlier attempt at the same task can have finished
        it, one whose worker died, and training it again would leave its
        configuration with two FINISHED children.
        """
        run = store.client.get_run(run_id)
        return cls(store.client, run_id, run.info.experiment_id, run.data.tags[TAG_EXPERIMENT],
                   run.data.tags[TAG_PRESET], store=store, scope=scope, reuse=reuse, reuse_own=True)

    def child_hash(self, params: Mapping[str, Any]) -> str:
        return config_hash(self.experiment, params, self.scope)

    @contextmanager
    def child(self, name: str, params: Mapping[str, Any],
              per_replicate: Collection[str] = ()) -> Iterator[TrackedRun | ReusedRun]:
        """A nested run for one model, tagged with the hash of its recipe and the group of its replicates.

        The group (`identity.group_hash`) leaves out the seed, the replicate
        index and the `per_replicate` params, so MLflow's group-by on the tag
        `hw1track.group` gathers the replicates of one configuration.

        With reuse on, a FINISHED run of the same hash is linked instead and
        yielded as a `ReusedRun`. Looking it up and training happen under a
        claim on the hash, so processes sharing a local store never train the
        same model twice: the later one waits, then reuses.
        """
        key = self.child_hash(params)
        with self._claimed(name, key):
            finished = self._finished_twin(key)
            if finished is not None:
                self.link(key, finished)
                yield ReusedRun(self.client, finished)
                return
            tags = {
                MLFLOW_PARENT_RUN_ID: self.run_id,
                TAG_EXPERIMENT: self.experiment,
                TAG_PRESET: self.preset,
                TAG_ROLE: "child",
                TAG_CONFIG_HASH: key,
                TAG_GROUP: group_hash(self.experiment, params, self.scope, per_replicate),
                **_position_tags(params),
                **current_process_tags(),
                **inputs.source_tags(),
            }
            if "code_version" in self.scope:
                tags[TAG_CODE_VERSION] = str(self.scope["code_version"])
            created = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            run = TrackedRun(self.client, created.info.run_id)
            with ended_with_status(run):
                run.log_params(params)
                yield run

    def _finished_twin(self, key: str) -> Run | None:
        """A FINISHED child of hash `key` to reuse: any in the experiment with reuse on, else one of this
        parent's own with `reuse_own` (see `attach`), else none."""
        if self.reuse:
            return self.store.finished_run(self.experiment_id, TAG_CONFIG_HASH, key, "child")
        if self.reuse_own:
            return self.store.finished_run(self.experiment_id, TAG_CONFIG_HASH, key, "child", self.run_id)
        return None

    @contextmanager
    def _claimed(self, name: str, key: str) -> Iterator[None]:
        lock = self.store.claim(key) if self.reuse else None
        if lock is None:
            yield
            return
        try:
            lock.acquire(timeout=0)
        except LockTimeout:
            print(f"[{self.experiment}] {name}: another process is training it; waiting to reuse it",
                  file=sys.stderr, flush=True)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def link(self, key: str, run: Run) -> None:
        """Make a finished child of another invocation one of this parent's models (see `identity.reused_child_ids`)."""
        if run.data.tags.get(MLFLOW_PARENT_RUN_ID) != self.run_id:
            self.set_tags({f"{TAG_REUSED_PREFIX}{key}": run.info.run_id})


def _position_tags(params: Mapping[str, Any]) -> dict[str, str]:
    """The child's model and replicate as tags, so that they exist from the moment the run does
    (`orphans.earlier_attempts`)."""
    return {tag: str(params[param]) for tag, param in ((TAG_MODEL, PARAM_MODEL), (TAG_REPLICATE, PARAM_REPLICATE))
            if param in params}


@contextmanager
def parent_run(store: Store, experiment: str, preset: str, run_name: str, tags: Mapping[str, Any], *,
               scope: Mapping[str, Any] | None = None, reuse: bool = False) -> Iterator[ParentRun]:
    """Open the run of one invocation; every child opened inside it is nested under it (or reused, see `child`)."""
    experiment_id = store.experiment_id(experiment, create=True)
    all_tags = {TAG_EXPERIMENT: experiment, TAG_PRESET: preset, TAG_ROLE: "parent", **current_process_tags(),
                **inputs.source_tags(), **tags}
    created = store.client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    run = ParentRun(store.client, created.info.run_id, experiment_id, experiment, preset, store=store, scope=scope,
                    reuse=reuse)
    with ended_with_status(run), system_metrics.recorded(run.run_id, store.uri):
        yield run
