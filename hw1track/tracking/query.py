"""Reading the tracking store back: the one way analysis, reports and notebooks get at runs.

Everything returns plain MLflow `Run` objects or tidy pandas DataFrames, so a
notebook can use the same calls the figures are built from. `StoreReader` is
what the analysis modules take; the module-level functions at the bottom wrap
it for notebooks, each with an optional `tracking_uri` (default: the project's
store, see `default_tracking_uri`):

    from hw1track.tracking import query
    runs = query.experiment_runs("part1_3b")      # children of the newest finished invocation
    query.metric_history(runs, ["test_acc"])      # tidy: run_id, run_name, key, step, value
    query.download_artifact(runs.run_id[0], "weights/final.pt")
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union
from urllib.parse import unquote, urlparse

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hw1track.errors import StoreError
from hw1track.tracking.identity import newest_per_config, reused_child_ids
from hw1track.tracking.names import (PARAM_REPLICATE, TAG_DATASET, TAG_EXPERIMENT, TAG_GROUP, TAG_MNIST_MD5,
                                     TAG_ROLE)
from hw1track.tracking.store import Store, default_tracking_uri, local_database
from hw1track.writable import why_not_writable


def parent_dataset(parent: Run) -> str | None:
    """The image set a parent run trained on; image runs from before the choice are MNIST, function fits have none."""
    if TAG_DATASET in parent.data.tags:
        return parent.data.tags[TAG_DATASET]
    return "mnist" if TAG_MNIST_MD5 in parent.data.tags else None


class StoreReader:
    """Read-only queries over a store; never creates the database or an experiment."""

    def __init__(self, uri: str | None = None):
        self.store = Store(uri)

    @property
    def client(self):
        return self.store.client

    @classmethod
    def exists(cls, uri: str) -> bool:
        database = local_database(uri)
        return database is None or database.exists()

    def _experiment_id(self, experiment: str) -> str | None:
        if not self.exists(self.store.uri):
            return None
        return self.store.experiment_id(experiment)

    def parents(self, experiment: str, status: str | None = "FINISHED") -> list[Run]:
        """Parent runs of `experiment`, newest first."""
        experiment_id = self._experiment_id(experiment)
        if experiment_id is None:
            return []
        query = f"tags.`{TAG_ROLE}` = 'parent'"
        if status:
            query += f" and attributes.status = '{status}'"
        return list(self.client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"]))

    def latest_parent(self, experiment: str, run_id: str | None = None, dataset: str | None = None) -> Run:
        """The given parent run, or the newest FINISHED one (of image set `dataset`, when given and the
        experiment trains on images); a `StoreError` says to run it first."""
        if run_id:
            run = self._run(run_id)
            if run.data.tags.get(TAG_EXPERIMENT) != experiment or run.data.tags.get(TAG_ROLE) != "parent":
                raise StoreError(f"run {run_id} is not a parent run of {experiment}")
            return run
        found = self.parents(experiment)
        if dataset is not None and any(parent_dataset(run) is not None for run in found):
            found = [run for run in found if parent_dataset(run) == dataset]
            if not found:
                raise StoreError(f"no finished run of {experiment} on {dataset} in {self.store.uri}; "
                                 f"run `hw1track run {experiment} --dataset {dataset}` first")
        if not found:
            raise StoreError(f"no finished run of {experiment} in {self.store.uri}; "
                             f"run `hw1track run {experiment}` first")
        return found[0]

    def _run(self, run_id: str) -> Run:
        """The run `run_id`, or a `StoreError`; asking a store that is not there does not create it."""
        missing = f"no run {run_id} in {self.store.uri}"
        if not self.exists(self.store.uri):
            raise StoreError(f"{missing}: there is no store there")
        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        raise StoreError(missing)

    def cannot_log_reason(self, artifact_uri: str | None = None) -> str | None:
        """Why nothing can be logged to this store (or under `artifact_uri`), or None when it can.

        Reading commands log what they draw back to the store. A store in a place
        they may not write (a read-only mount, a shared folder, a course's published
        results) is still read; that logging is skipped, and this says why.
        A server decides for itself and says so when it refuses.
        """
        if local_database(self.store.uri) is None:
            return None
        reason = self.store.read_only_reason()
        if reason is None and artifact_uri and urlparse(artifact_uri).scheme in {"", "file"}:
            reason = why_not_writable(unquote(urlparse(artifact_uri).path))  # artifacts may live elsewhere
        return reason

    def children(self, parent: Run, status: str | None = "FINISHED") -> list[Run]:
        """The child runs of `parent`, and the finished runs it reused, in the order they were started.

        Of several FINISHED runs with one config hash only the newest is kept, so
        an analysis sees exactly one finished model per config.
        """
        status_clause = f" and attributes.status = '{status}'" if status else ""
        query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'" + status_clause
        runs = list(self.client.search_runs([parent.info.experiment_id], query,
                                            order_by=["attributes.start_time ASC"], max_results=5000))
        if linked := reused_child_ids(parent):
            ids = ", ".join(f"'{run_id}'" for run_id in linked)
            query = f"attributes.run_id IN ({ids})" + status_clause
            runs = sorted(runs + list(self.client.search_runs([parent.info.experiment_id], query, max_results=5000)),
                          key=lambda run: run.info.start_time)
        return newest_per_config(runs)

    def history(self, runs: Iterable[Run], keys: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy metric histories: one row per (run, key, step) with the run's name (all keys if none given)."""
        rows = []
        for run in runs:
            for key in (sorted(run.data.metrics) if keys is None else keys):
                for metric in self.client.get_metric_history(run.info.run_id, key):
                    rows.append((run.info.run_id, run.info.run_name, key, metric.step, metric.value))
        frame = pd.DataFrame(rows, columns=["run_id", "run_name", "key", "step", "value"])
        return frame.sort_values(["run_id", "key", "step"], kind="stable").reset_index(drop=True)

    def download(self, run: Run, artifact_path: str, into: str | Path | None = None) -> Path:
        """A local copy of one artifact of `run`."""
        into = Path(into or tempfile.mkdtemp(prefix="hw1track-"))
        os.makedirs(into, exist_ok=True)
        return Path(self.client.download_artifacts(run.info.run_id, artifact_path, str(into)))

    def artifacts(self, run: Run, folder: str | None = None) -> list[str]:
        """Paths of the files logged to `run` (under `folder`, recursively), as `download` takes them."""
        found = []
        for entry in self.client.list_artifacts(run.info.run_id, folder):
            found.extend(self.artifacts(run, entry.path) if entry.is_dir else [entry.path])
        return found

    def experiment_runs(self, experiment: str, parent_run_id: str | None = None,
                        status: str | None = "FINISHED") -> pd.DataFrame:
        """The models of one invocation (the newest finished one unless `parent_run_id` is given), one row each.

        Params that are numbers in every row become numeric columns, so that
        `frame.plot(x="params.n_params", y="metrics.test_acc")` works without casts.
        """
        parent = self.latest_parent(experiment, parent_run_id)
        frame = runs_frame(self.children(parent, status))
        if frame.empty:
            return frame
        frame["experiment"], frame["parent_run_id"] = experiment, parent.info.run_id
        fixed = ["run_id", "run_name", "experiment", "parent_run_id", "status"]
        return _numeric_params(frame[fixed + sorted(c for c in frame.columns if c not in fixed)])

    def invocations(self, experiment: str) -> pd.DataFrame:
        """Every parent run of `experiment` whatever its status, newest first, with when it started."""
        parents = self.parents(experiment, status=None)
        frame = runs_frame(parents)
        if not frame.empty:
            frame.insert(3, "start_time", pd.to_datetime([run.info.start_time for run in parents], unit="ms"))
        return frame


def by_group(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """The replicates of each configuration (tag `hw1track.group`), groups in order of first appearance.

    Runs without the tag (made before replicates existed) are each a group of their own.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.data.tags.get(TAG_GROUP, run.info.run_id), []).append(run)
    return groups


def replicate(run: Run) -> int:
    """Which replicate of its configuration `run` is (0 for runs made before replicates existed)."""
    return int(run.data.params.get(PARAM_REPLICATE, 0))


def runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run: id, name, status, then `params.*`, `metrics.*` (latest values) and `tags.*`."""
    rows = []
    for run in runs:
        row = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status}
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
        rows.append(row)
    return pd.DataFrame(rows)



def _numeric_params(frame: pd.DataFrame) -> pd.DataFrame:
    """MLflow stores params as strings; a column whose every value parses as a number becomes numeric."""
    frame = frame.copy()
    for column in (c for c in frame.columns if c.startswith("params.")):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.notna().sum() == frame[column].notna().sum():
            frame[column] = numbers
    return frame


# Notebook helpers: one reader per store, so repeated calls share one MLflow client.

_readers: dict[str, StoreReader] = {}


def reader(tracking_uri: str | None = None) -> StoreReader:
    """The reader of `tracking_uri`, else of $MLFLOW_TRACKING_URI, else of mlflow.db in the working directory."""
    uri = tracking_uri or default_tracking_uri()
    if uri not in _readers:
        _readers[uri] = StoreReader(uri)
    return _readers[uri]


def experiment_runs(experiment: str, parent_run_id: str | None = None, tracking_uri: str | None = None,
                    status: str | None = "FINISHED") -> pd.DataFrame:
    """One row per model of the newest finished invocation of `experiment` (or of `parent_run_id`)."""
    return reader(tracking_uri).experiment_runs(experiment, parent_run_id, status)


def invocations(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """Every parent run of `experiment`, newest first: pick a `run_id` to pass as `parent_run_id`."""
    return reader(tracking_uri).invocations(experiment)


RunsLike = Union[str, Run, pd.DataFrame, Iterable[Union[str, Run]]]


def _runs(store: StoreReader, runs: RunsLike) -> list[Run]:
    if isinstance(runs, (str, Run)):
        runs = [runs]
    elif isinstance(runs, pd.DataFrame):
        runs = runs["run_id"].tolist()
    return [store.client.get_run(run) if isinstance(run, str) else run for run in runs]


def metric_history(runs: RunsLike, keys: str | Sequence[str] | None = None,
                   tracking_uri: str | None = None) -> pd.DataFrame:
    """Every logged value of `keys` (all metrics if None) for one run id, many, or an `experiment_runs` frame."""
    store = reader(tracking_uri)
    return store.history(_runs(store, runs), [keys] if isinstance(keys, str) else keys)


def list_artifacts(run: str | Run, folder: str | None = None, tracking_uri: str | None = None) -> list[str]:
    """The artifact paths of one run (by id or `Run`), e.g. `weights/final.pt`, `figures/loss.png`."""
    store = reader(tracking_uri)
    return store.artifacts(_runs(store, run)[0], folder)


def download_artifact(run: str | Run, artifact_path: str, into: str | Path | None = None,
                      tracking_uri: str | None = None) -> Path:
    """A local copy of one artifact (a file or a folder) of one run, in `into` or a fresh temporary folder."""
    store = reader(tracking_uri)
    return store.download(_runs(store, run)[0], artifact_path, into)
