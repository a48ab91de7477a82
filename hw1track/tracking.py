"""MLflow bookkeeping: where the store is, parent and child runs, buffered metrics, weights.

A parent run stands for one invocation of an experiment and a child run for one
trained model. Runs are always ended with a status that says how they ended
(FINISHED, FAILED, KILLED), so the store never shows a dead run as RUNNING.
Metrics are buffered and written with `log_batch`, because one synchronous
`log_metric` costs milliseconds against SQLite, more than a small model's step.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID  # noqa: F401 (re-exported)

DEFAULT_DB = "mlflow.db"
ARTIFACT_DIR = "mlruns"
EXPERIMENT_PREFIX = "hw1/"
TAG_EXPERIMENT = "hw1track.experiment"
TAG_PRESET = "hw1track.preset"
TAG_ROLE = "hw1track.role"
TAG_CONFIG_HASH = "hw1track.config_hash"
TAG_GIT_COMMIT = "hw1track.git_commit"
TAG_MNIST_MD5 = "hw1track.mnist_md5"

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request
MAX_PARAMS_PER_BATCH = 100
FLUSH_EVERY_SECONDS = 30.0  # bound on what a hard kill can lose


class Terminated(BaseException):
    """SIGTERM turned into an exception so that runs end as KILLED, like Ctrl-C."""


def raise_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated by SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else mlflow.db in the working directory (what a plain `mlflow ui` there opens)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def local_database(uri: str) -> Path | None:
    """The SQLite file behind `uri`, or None for a server or another database."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live in mlruns/ beside the database; servers choose their own."""
    database = local_database(uri)
    if database is None:
        return None
    folder = database.resolve().parent / ARTIFACT_DIR / experiment.replace("/", "_")
    return folder.as_uri()


def mlflow_experiment_name(experiment: str) -> str:
    return f"{EXPERIMENT_PREFIX}{experiment}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def config_hash(experiment: str, params: Mapping[str, Any]) -> str:
    """Identity of a trained model's recipe: equal hashes mean interchangeable runs."""
    payload = json.dumps({"experiment": experiment, "params": {k: str(v) for k, v in params.items()}},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Store:
    """An MLflow tracking store reached through one client."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or default_tracking_uri()
        if urlparse(self.uri).scheme in {"http", "https"}:
            # Fail in seconds, not minutes, when the server is down.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

    @functools.cached_property
    def client(self) -> MlflowClient:
        """Created on first use: opening a SQLite store creates its database, which a failed command must not."""
        database = local_database(self.uri)
        if database is None:
            return MlflowClient(tracking_uri=self.uri)
        # Two processes opening a fresh SQLite store would both run its schema migrations and
        # one would fail; the first query under a lock makes the set-up happen once.
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{database}.lock", timeout=120):
            client = MlflowClient(tracking_uri=self.uri)
            client.search_experiments(max_results=1)
        return client

    def experiment_id(self, experiment: str, create: bool = False) -> str | None:
        name = mlflow_experiment_name(experiment)
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        if not create:
            return None
        return self.client.create_experiment(name, artifact_location=artifact_location(self.uri, experiment),
                                             tags={TAG_EXPERIMENT: experiment})


class TrackedRun:
    """One MLflow run: buffered metrics, params, tags and artifacts.

    It is also a `MetricSink`, so the training loop logs into it directly.
    """

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        timestamp = _now_ms()
        self._pending.extend(Metric(key, float(value), timestamp, step) for key, value in metrics.items())
        self._maybe_flush()

    def log_series(self, series: Mapping[str, list[float]], first_step: int) -> None:
        timestamp = _now_ms()
        for key, values in series.items():
            self._pending.extend(Metric(key, float(v), timestamp, first_step + i) for i, v in enumerate(values))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._pending) >= MAX_METRICS_PER_BATCH or time.monotonic() - self._last_flush > FLUSH_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[start:start + MAX_METRICS_PER_BATCH])
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_PARAMS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_json(self, obj: Any, artifact_path: str) -> None:
        self._log_via_tempfile(artifact_path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True)))

    def log_csv(self, frame: Any, artifact_path: str) -> None:
        """A pandas DataFrame as CSV, the format notebooks and spreadsheets read directly."""
        self._log_via_tempfile(artifact_path, lambda p: frame.to_csv(p, index=False))

    def log_state_dict(self, model: torch.nn.Module, artifact_path: str = "weights/final.pt") -> None:
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


def _status_for(exc: BaseException) -> str:
    return RunStatus.to_string(RunStatus.KILLED if isinstance(exc, (KeyboardInterrupt, Terminated))
                               else RunStatus.FAILED)


@contextmanager
def _lifecycle(run: TrackedRun) -> Iterator[TrackedRun]:
    """End `run` as FINISHED, or FAILED/KILLED after flushing what it buffered."""
    try:
        yield run
    except BaseException as exc:
        try:
            run.flush()
        finally:
            run.end(_status_for(exc))
        raise
    run.flush()
    run.end("FINISHED")


class ParentRun(TrackedRun):
    """One invocation of an experiment; its children are the models it trains."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str, experiment: str, preset: str):
        super().__init__(client, run_id)
        self.experiment_id = experiment_id
        self.experiment = experiment
        self.preset = preset

    @contextmanager
    def child(self, name: str, params: Mapping[str, Any]) -> Iterator[TrackedRun]:
        """A nested run for one model, tagged with the hash of its recipe."""
        tags = {
            MLFLOW_PARENT_RUN_ID: self.run_id,
            TAG_EXPERIMENT: self.experiment,
            TAG_PRESET: self.preset,
            TAG_ROLE: "child",
            TAG_CONFIG_HASH: config_hash(self.experiment, params),
        }
        created = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run = TrackedRun(self.client, created.info.run_id)
        with _lifecycle(run):
            run.log_params(params)
            yield run


@contextmanager
def parent_run(store: Store, experiment: str, preset: str, run_name: str,
               tags: Mapping[str, Any]) -> Iterator[ParentRun]:
    """Open the run of one invocation; every child opened inside it is nested under it."""
    experiment_id = store.experiment_id(experiment, create=True)
    all_tags = {TAG_EXPERIMENT: experiment, TAG_PRESET: preset, TAG_ROLE: "parent", **tags}
    created = store.client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    run = ParentRun(store.client, created.info.run_id, experiment_id, experiment, preset)
    with _lifecycle(run):
        yield run
