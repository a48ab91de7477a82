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
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hw1track.errors import StoreError, UsageError
from hw1track.tracking import server_retries
from hw1track.tracking.names import EXPERIMENT_PREFIX, TAG_EXPERIMENT, TAG_ROLE
from hw1track.writable import why_not_writable

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small file is noise

DEFAULT_DB = "mlflow.db"
ARTIFACT_DIR = "mlruns"
PROBE_TIMEOUT_SECONDS = 5  # a tracking server that does not answer within this is reported unreachable
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
SUPPORTED_URIS = ("sqlite:///PATH", "http(s)://HOST:PORT",
                  *(f"{engine}://..." for engine in DATABASE_ENGINES if engine != "sqlite"))


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else mlflow.db in the working directory (what a plain `mlflow ui` there opens)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def check_tracking_uri(uri: str, given_as: str = "--tracking-uri") -> None:
    """Refuse, with one line naming what works, a URI whose store MLflow cannot serve here.

    MLflow also takes a folder (`file:` or a plain path) but refuses to open its
    file store, which is in maintenance mode; other schemes fail deep inside it.
    The SQL databases are MLflow's own list (`DATABASE_ENGINES`, with an
    optional `+driver`); SQLite needs a file, not `sqlite://` (in memory, gone
    when the command exits).
    """
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme == "sqlite":
        supported = uri.startswith("sqlite:///") and len(uri) > len("sqlite:///")
    else:
        supported = scheme in {"http", "https"} or scheme in DATABASE_ENGINES
    if not supported:
        raise UsageError(f"unsupported tracking URI {uri!r} ({given_as}); use {', '.join(SUPPORTED_URIS)}")


def check_sqlite_file(database: Path) -> None:
    """A file that is there but not a SQLite database is refused before MLflow reads (or sets up) anything in it."""
    if database.is_dir():
        raise StoreError(f"{database} is a folder, not an MLflow SQLite store; pass another --tracking-uri")
    try:
        with open(database, "rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot read the tracking store {database}: {exc.strerror or exc}") from None
    if header and header != SQLITE_HEADER:  # an empty file is an empty database to SQLite
        raise StoreError(_not_a_database(database))


def _not_a_database(database: Path) -> str:
    return (f"{database} is not an MLflow SQLite store (not a SQLite database); move it away "
            f"or pass another --tracking-uri")


def _refused(exc: Exception, database: Path) -> StoreError | None:
    """What opening a SQLite store raised, as one line, when the user can act on it; None for anything else."""
    text = str(exc)
    if "file is not a database" in text:  # a damaged file that starts like a database
        return StoreError(_not_a_database(database))
    if "out-of-date database schema" in text:
        return StoreError(f"{database} was made by an older MLflow; back it up, then run "
                          f"`mlflow db upgrade sqlite:///{database}`")
    if "attempt to write a readonly database" in text:
        return StoreError(f"{database} is not set up as an MLflow store yet and cannot be written here")
    return None


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
        check_sqlite_file(database)
        if self.read_only_reason() is not None:
            # A read-only mount, a shared folder, a course's published results: nobody can set the store up
            # there, and MLflow only reads an existing, up-to-date database when it opens one. The lock
            # file could not be created there either.
            return self._opened(database)
        # Two processes opening a fresh SQLite store would both run its schema migrations and
        # one would fail; the first query under a lock makes the set-up happen once.
        database.parent.mkdir(parents=True, exist_ok=True)
        with self._set_up_lock():
            return self._opened(database)

    def _opened(self, database: Path) -> MlflowClient:
        """A client whose first query has run, so that a database MLflow cannot use fails here, in one line."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            client = MlflowClient(tracking_uri=self.uri)
            client.search_experiments(max_results=1)
        except (MlflowException, SQLAlchemyError) as exc:
            refused = _refused(exc, database)
            if refused is None:
                raise
            raise refused from None
        return client

    def read_only_reason(self) -> str | None:
        """Why this local store's existing database cannot be written, or None (also for a server or no database).

        SQLite writes a journal beside the database, so its folder must be writable too.
        """
        database = local_database(self.uri)
        if database is None or not database.exists():
            return None
        return why_not_writable(database) or why_not_writable(database.parent)

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
        check_sqlite_file(database)
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

    def finished_run(self, experiment_id: str, tag: str, value: str, role: str,
                     parent_run_id: str | None = None) -> Run | None:
        """The newest FINISHED run of `role` whose `tag` equals `value` (and nested under `parent_run_id`)."""
        query = (f"tags.`{tag}` = '{value}' and tags.`{TAG_ROLE}` = '{role}' "
                 f"and attributes.status = 'FINISHED'")
        if parent_run_id is not None:
            query += f" and tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
        found = self.client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"],
                                        max_results=1)
        return found[0] if found else None
