"""Reading the tracking store back: the one way analysis, reports and notebooks get at runs.

Everything returns plain MLflow `Run` objects or tidy pandas DataFrames, so a
notebook can use the same calls the figures are built from.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
from mlflow.entities import Run

from hw1track.errors import StoreError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small file is noise
from hw1track.tracking import MLFLOW_PARENT_RUN_ID, TAG_EXPERIMENT, TAG_ROLE, Store, local_database


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

    def latest_parent(self, experiment: str, run_id: str | None = None) -> Run:
        """The given parent run, or the newest FINISHED one; a `StoreError` says to run it first."""
        if run_id:
            run = self.client.get_run(run_id)
            if run.data.tags.get(TAG_EXPERIMENT) != experiment or run.data.tags.get(TAG_ROLE) != "parent":
                raise StoreError(f"run {run_id} is not a parent run of {experiment}")
            return run
        found = self.parents(experiment)
        if not found:
            raise StoreError(f"no finished run of {experiment} in {self.store.uri}; "
                             f"run `hw1track run {experiment}` first")
        return found[0]

    def children(self, parent: Run, status: str | None = "FINISHED") -> list[Run]:
        """The child runs of `parent` in the order they were started."""
        query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'"
        if status:
            query += f" and attributes.status = '{status}'"
        return list(self.client.search_runs([parent.info.experiment_id], query,
                                            order_by=["attributes.start_time ASC"], max_results=5000))

    def history(self, runs: Iterable[Run], keys: Sequence[str]) -> pd.DataFrame:
        """Tidy metric histories: one row per (run, key, step) with the run's name."""
        rows = []
        for run in runs:
            for key in keys:
                for metric in self.client.get_metric_history(run.info.run_id, key):
                    rows.append((run.info.run_id, run.info.run_name, key, metric.step, metric.value))
        frame = pd.DataFrame(rows, columns=["run_id", "run_name", "key", "step", "value"])
        return frame.sort_values(["run_id", "key", "step"], kind="stable").reset_index(drop=True)

    def download(self, run: Run, artifact_path: str, into: str | Path | None = None) -> Path:
        """A local copy of one artifact of `run`."""
        into = Path(into or tempfile.mkdtemp(prefix="hw1track-"))
        os.makedirs(into, exist_ok=True)
        return Path(self.client.download_artifacts(run.info.run_id, artifact_path, str(into)))


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

