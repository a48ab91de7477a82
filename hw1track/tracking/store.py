"""Where runs are kept: the MLflow tracking store, its experiments, and the locks processes share through it.

A local store is a SQLite file (`mlflow.db` in the working directory unless
told otherwise, what a plain `mlflow ui` there opens) with artifacts in
`mlruns/` beside it; a remote one is a tracking server. Several processes may
use one local store at once, so creating it, creating an experiment and
claiming a model to train happen under file locks.
"""

from __future__ import annotations

import functools
import os
import tempfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from hw1track.errors import StoreError
from hw1track.tracking import server_retries
from hw1track.tracking.names import EXPERIMENT_PREFIX, TAG_EXPERIMENT, TAG_ROLE

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small file is noise

DEFAULT_DB = "mlflow.db"
ARTIFACT_DIR = "mlruns"
PROBE_TIMEOUT_SECONDS = 5  # a tracking server that does not answer within this is reported unreachable


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


class Store:
    """An MLflow tracking store reached through one client."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or default_tracking_uri()
        if urlparse(self.uri).scheme in {"http", "https"}:
            server_retries.retry_patiently()  # a started run rides out a restart; `check_ready` still fails fast

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
