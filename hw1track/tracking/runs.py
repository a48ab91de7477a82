"""MLflow bookkeeping: where the store is, parent and child runs, buffered metrics, weights.

A parent run stands for one invocation of an experiment and a child run for one
trained model. Runs are always ended with a status that says how they ended
(FINISHED, FAILED, KILLED), so the store never shows a dead run as RUNNING.
Every run records the process that opened it (see `processes`), so a run left
RUNNING by `kill -9` can be recognised and marked KILLED later.
Metrics are buffered, because one synchronous `log_metric` costs milliseconds
against SQLite, more than a small model's step. A local SQLite store takes them
in bulk in the training process (`sqlite_metrics`, a few µs per row); a
tracking server gets them from a writer process beside training
(`metric_writer`), so that HTTP round trips never stall a step.

A child run is identified by a hash of its recipe and scope (experiment,
preset, code version, base seed). With reuse on, a parent whose child config
already FINISHED somewhere in the experiment links that run with a tag
`hw1track.reused.<hash>` instead of training it again; readers follow those
links (`reused_child_ids`) and keep one finished run per hash (`newest_per_config`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from filelock import FileLock
from filelock import Timeout as LockTimeout
from mlflow import MlflowClient
from mlflow.entities import Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID  # noqa: F401 (re-exported)

from hw1track.tracking import metric_writer, sqlite_metrics
from hw1track.errors import StoreError
from hw1track.tracking.processes import current_process_tags

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small file is noise

DEFAULT_DB = "mlflow.db"
ARTIFACT_DIR = "mlruns"
EXPERIMENT_PREFIX = "hw1/"
TAG_EXPERIMENT = "hw1track.experiment"
TAG_PRESET = "hw1track.preset"
TAG_ROLE = "hw1track.role"
TAG_CONFIG_HASH = "hw1track.config_hash"
TAG_GIT_COMMIT = "hw1track.git_commit"
TAG_MNIST_MD5 = "hw1track.mnist_md5"
TAG_CODE_VERSION = "hw1track.code_version"
TAG_RUN_HASH = "hw1track.run_hash"  # a parent's identity: experiment, preset, code version and whole config
TAG_REUSED_PREFIX = "hw1track.reused."  # on a parent: hw1track.reused.<config hash> = id of the child it reuses
WEIGHTS_ARTIFACT = "weights/final.pt"
PROBE_TIMEOUT_SECONDS = 5  # a tracking server that does not answer within this is reported unreachable

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request
# Rows per transaction on a local SQLite store. A commit costs about 2 ms (its fsyncs): a row took 7.3 µs
# of wall time in transactions of 1,000 and 5.4 µs in transactions of 10,000 (benchmarks/metric_rows.py).
LOCAL_ROWS_PER_WRITE = 10_000
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


def config_hash(experiment: str, params: Mapping[str, Any], scope: Mapping[str, Any] | None = None) -> str:
    """Identity of a trained model's recipe: equal hashes mean interchangeable runs.

    `scope` is what the params do not show but the result depends on: preset,
    code version and the invocation's base seed (which picks the data subsets).
    """
    identity: dict[str, Any] = {"experiment": experiment, "params": {k: str(v) for k, v in params.items()}}
    if scope:
        identity["scope"] = {k: str(v) for k, v in scope.items()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class Store:
    """An MLflow tracking store reached through one client."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or default_tracking_uri()
        if urlparse(self.uri).scheme in {"http", "https"}:
            # Fail in seconds, not minutes, when the server is down.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

    @property
    def is_server(self) -> bool:
        return urlparse(self.uri).scheme in {"http", "https"}

    @functools.cached_property
    def client(self) -> MlflowClient:
        """Created on first use: opening a SQLite store creates its database, which a failed command must not."""
        database = local_database(self.uri)
        if database is None:
            if self.is_server:
                self._check_reachable()
            return MlflowClient(tracking_uri=self.uri)
        # Two processes opening a fresh SQLite store would both run its schema migrations and
        # one would fail; the first query under a lock makes the set-up happen once.
        database.parent.mkdir(parents=True, exist_ok=True)
        with self._set_up_lock():
            client = MlflowClient(tracking_uri=self.uri)
            client.search_experiments(max_results=1)
        return client

    def _set_up_lock(self) -> AbstractContextManager:
        database = local_database(self.uri)
        return nullcontext() if database is None else FileLock(f"{database}.lock", timeout=120)

    def check_ready(self) -> None:
        """Fail in seconds with one line when runs cannot be written here, before anything is trained."""
        database = local_database(self.uri)
        if database is None:
            if self.is_server:
                self._check_reachable()
            return
        folder = database.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
            if database.exists():
                with open(database, "r+b"):
                    pass
        except OSError as exc:
            raise StoreError(f"cannot write the tracking store in {folder}: {exc.strerror or exc}") from None

    def _check_reachable(self) -> None:
        """One quick request with no retries: MLflow's own requests retry with back-off for minutes."""
        import requests

        try:
            requests.get(f"{self.uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_SECONDS)
        except requests.exceptions.SSLError:
            return  # it answered; certificates are for MLflow's own settings to handle
        except requests.exceptions.RequestException as exc:
            raise StoreError(f"cannot reach the tracking server at {self.uri} ({type(exc).__name__} within "
                             f"{PROBE_TIMEOUT_SECONDS} s); start it or pass another --tracking-uri") from None

    def experiment_id(self, experiment: str, create: bool = False) -> str | None:
        name = mlflow_experiment_name(experiment)
        client = self.client
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        if not create:
            return None
        with self._set_up_lock():  # two processes starting on a fresh store would both create it
            found = client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            try:
                return client.create_experiment(name, artifact_location=artifact_location(self.uri, experiment),
                                                tags={TAG_EXPERIMENT: experiment})
            except MlflowException as exc:  # created meanwhile through a server
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        return client.get_experiment_by_name(name).experiment_id

    def claim(self, key: str) -> FileLock | None:
        """A lock on `key` shared by every process using this local store, so that one trains what others await.

        Lock files live in `<database>-locks/`; a server store has no shared folder and no claim.
        """
        database = local_database(self.uri)
        if database is None:
            return None
        folder = Path(f"{database}-locks")
        folder.mkdir(exist_ok=True)
        return FileLock(str(folder / f"{key}.lock"))

    def finished_run(self, experiment_id: str, tag: str, value: str, role: str) -> Run | None:
        """The newest FINISHED run of `role` whose `tag` equals `value`."""
        query = (f"tags.`{tag}` = '{value}' and tags.`{TAG_ROLE}` = '{role}' "
                 f"and attributes.status = 'FINISHED'")
        found = self.client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"],
                                        max_results=1)
        return found[0] if found else None


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
        timestamp = _now_ms()
        self._pending.extend((key, float(value), timestamp, step) for key, value in metrics.items())
        self._maybe_flush()

    def log_series(self, series: Mapping[str, list[float]], first_step: int) -> None:
        timestamp = _now_ms()
        for key, values in series.items():
            self._pending.extend((key, float(v), timestamp, first_step + i) for i, v in enumerate(values))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        """Write full batches: into a local store here, to a server through the writer process.

        Runs that log little write in-process when they flush, without starting a writer.
        """
        if len(self._pending) >= (MAX_METRICS_PER_BATCH if self._local is None else LOCAL_ROWS_PER_WRITE):
            if self._local is None:
                self._writer = self._writer or metric_writer.writer_for(self.client, MAX_METRICS_PER_BATCH)
        elif time.monotonic() - self._last_flush <= FLUSH_EVERY_SECONDS:
            return
        if self._writer is None:
            self.flush()
            return
        pending, self._pending = self._pending, []
        self._writer.submit(self.run_id, pending, self._write_here)
        self._last_flush = time.monotonic()

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


class ReusedRun(TrackedRun):
    """A FINISHED run standing in for a new run of the same config: it holds everything, so writes are dropped."""

    def __init__(self, client: MlflowClient, run: Run):
        super().__init__(client, run.info.run_id)
        self.run = run

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_series(self, series: Mapping[str, list[float]], first_step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        pass

    def _log_via_tempfile(self, artifact_path: str, write: Any) -> None:
        pass

    def end(self, status: str) -> None:
        pass


def _status_for(exc: BaseException) -> str:
    return RunStatus.to_string(RunStatus.KILLED if isinstance(exc, (KeyboardInterrupt, Terminated))
                               else RunStatus.FAILED)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while a run is being ended: a second Ctrl-C must not leave it RUNNING."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def ended_with_status(run: TrackedRun) -> Iterator[TrackedRun]:
    """End `run` as FINISHED, or FAILED/KILLED after flushing what it buffered."""
    try:
        yield run
    except BaseException as exc:
        with _signals_deferred():
            try:
                run.flush()
            finally:
                run.end(_status_for(exc))
        raise
    with _signals_deferred():
        try:
            run.flush()
        except BaseException:
            run.end(RunStatus.to_string(RunStatus.FAILED))
            raise
        run.end("FINISHED")


class ParentRun(TrackedRun):
    """One invocation of an experiment; its children are the models it trains (or reuses)."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str, experiment: str, preset: str, *,
                 store: Store | None = None, scope: Mapping[str, Any] | None = None, reuse: bool = False):
        super().__init__(client, run_id)
        self.experiment_id = experiment_id
        self.experiment = experiment
        self.preset = preset
        self.store = store
        self.scope = dict(scope or {})
        self.reuse = reuse and store is not None

    def child_hash(self, params: Mapping[str, Any]) -> str:
        return config_hash(self.experiment, params, self.scope)

    @contextmanager
    def child(self, name: str, params: Mapping[str, Any]) -> Iterator[TrackedRun]:
        """A nested run for one model, tagged with the hash of its recipe.

        With reuse on, a FINISHED run of the same hash is linked instead and
        yielded as a `ReusedRun`. Looking it up and training happen under a
        claim on the hash, so processes sharing a local store never train the
        same model twice: the later one waits, then reuses.
        """
        key = self.child_hash(params)
        with self._claimed(name, key):
            finished = (self.store.finished_run(self.experiment_id, TAG_CONFIG_HASH, key, "child")
                        if self.reuse else None)
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
                **current_process_tags(),
            }
            if "code_version" in self.scope:
                tags[TAG_CODE_VERSION] = str(self.scope["code_version"])
            created = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            run = TrackedRun(self.client, created.info.run_id)
            with ended_with_status(run):
                run.log_params(params)
                yield run

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
        """Make a finished child of another invocation one of this parent's models (see `reused_child_ids`)."""
        if run.data.tags.get(MLFLOW_PARENT_RUN_ID) != self.run_id:
            self.set_tags({f"{TAG_REUSED_PREFIX}{key}": run.info.run_id})


@contextmanager
def parent_run(store: Store, experiment: str, preset: str, run_name: str, tags: Mapping[str, Any], *,
               scope: Mapping[str, Any] | None = None, reuse: bool = False) -> Iterator[ParentRun]:
    """Open the run of one invocation; every child opened inside it is nested under it (or reused, see `child`)."""
    experiment_id = store.experiment_id(experiment, create=True)
    all_tags = {TAG_EXPERIMENT: experiment, TAG_PRESET: preset, TAG_ROLE: "parent", **current_process_tags(), **tags}
    created = store.client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    run = ParentRun(store.client, created.info.run_id, experiment_id, experiment, preset, store=store, scope=scope,
                    reuse=reuse)
    with ended_with_status(run):
        yield run


def reused_child_ids(parent: Run) -> list[str]:
    """Ids of the finished runs of other invocations that `parent` reused instead of training them again."""
    return [value for key, value in parent.data.tags.items() if key.startswith(TAG_REUSED_PREFIX)]


def newest_per_config(runs: Sequence[Run]) -> list[Run]:
    """`runs` without older FINISHED duplicates: one finished run per config hash, the newest; order kept."""
    newest: dict[str, Run] = {}
    for run in runs:
        key = run.data.tags.get(TAG_CONFIG_HASH)
        if key and run.info.status == "FINISHED":
            if key not in newest or run.info.start_time > newest[key].info.start_time:
                newest[key] = run
    return [run for run in runs
            if run.info.status != "FINISHED" or newest.get(run.data.tags.get(TAG_CONFIG_HASH), run) is run]


def load_state_dict(client: MlflowClient, run_id: str,
                    artifact_path: str = WEIGHTS_ARTIFACT) -> dict[str, torch.Tensor]:
    """Weights saved by `log_state_dict`, loaded without unpickling arbitrary objects (weights_only=True)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, artifact_path, tmp)
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise StoreError(f"run {run_id}: artifact {artifact_path} cannot be loaded ({_first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StoreError(f"run {run_id}: artifact {artifact_path} does not hold a state_dict")
    return state


def restore_weights(model: torch.nn.Module, client: MlflowClient, run_id: str,
                    artifact_path: str = WEIGHTS_ARTIFACT) -> None:
    """Put a run's stored weights back into `model`; a one-line `StoreError` when they cannot be."""
    state = load_state_dict(client, run_id, artifact_path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise StoreError(f"run {run_id}: artifact {artifact_path} does not fit the model "
                         f"({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
