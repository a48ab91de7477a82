"""Metric rows inserted in bulk into a local SQLite store, through MLflow's own table definitions.

`MlflowClient.log_batch` builds one SQLAlchemy ORM object per metric row and
costs about 60 µs of CPU per row here; per-iteration logging of a small model
writes tens of thousands of rows, and that CPU is taken from training. This
path writes the same rows with two bulk statements per call, about 5-6 µs
per row (benchmarks/metric_rows.py), and stores exactly what `log_batch` would
(tests compare the two through the MLflow API):

- rows go into MLflow's `metrics` table, with values sanitised by MLflow's own
  `sanitize_metric_value` (NaN and ±inf as `log_batch` stores them); a row
  already stored is skipped, as `log_batch` skips it, so a batch may be
  written twice after a writer failure;
- each key's row in `latest_metrics` moves to the batch's newest row when that
  is newer by (step, timestamp, value), the order `log_batch` uses;
- a run that does not exist or is deleted is refused with MLflow's error.

The tables are MLflow's SQLAlchemy definitions and the store is opened with
MLflow's `SqlAlchemyStore`, which refuses a database whose schema does not
match the installed MLflow, so the two cannot drift apart silently. Other
backends (servers, other databases) keep using `log_batch`, and so does a
SQLite store when a future MLflow has moved the internals used here: the
bulk path is only a speed-up, so its absence costs time, not a run.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hw1track.tracking.metric_writer import Row

WriteRows = Callable[[str, Sequence[Row]], None]
COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")  # what a row fills, in both tables

_warned = False  # the fall-back is announced once per process, not once per run


def bulk_writer(tracking_uri: str) -> WriteRows | None:
    """A function that writes rows into the store at `tracking_uri`, or None where `log_batch` has to write them.

    That is a store that is not a SQLite file, and also a SQLite store when the
    installed MLflow's internals no longer fit this module (one warning says so):
    its runs are then slower to log, never lost.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return _bulk_writer(tracking_uri)


@functools.cache
def _bulk_writer(tracking_uri: str) -> WriteRows | None:
    # Everything the writes rely on is looked up and checked here, before the first row. A newer MLflow that
    # moved or renamed one of its internals makes this raise ImportError (a module moved), AttributeError
    # (a class, method or column renamed), KeyError (a column renamed, looked up by name), TypeError or
    # ValueError (a signature or a return value changed), one of SQLAlchemy's errors (a table redefined) or
    # `_TablesChanged`. All mean one thing: this path does not fit that MLflow and `log_batch` does, so the
    # run falls back instead of failing. What opening the database raises (locked, outdated) is about the
    # store, not about these internals, and `log_batch` would meet it too: it is raised as before.
    try:
        from mlflow.entities import LifecycleStage
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from sqlalchemy import select, tuple_
        from sqlalchemy.dialects.sqlite import insert

        metrics, latest = SqlMetric.__table__, SqlLatestMetric.__table__
        _check_tables(metrics, latest)
        run_stage, run_key = SqlRun.lifecycle_stage, SqlRun.run_uuid
        insert_rows = insert(metrics).on_conflict_do_nothing()
        upsert = insert(latest)
        newer = tuple_(upsert.excluded.step, upsert.excluded.timestamp, upsert.excluded.value) \
            > tuple_(latest.c.step, latest.c.timestamp, latest.c.value)
        upsert_latest = upsert.on_conflict_do_update(
            index_elements=[latest.c.key, latest.c.run_uuid],
            set_={column: upsert.excluded[column] for column in ("value", "timestamp", "step", "is_nan")},
            where=newer)
    except Exception as exc:  # noqa: BLE001 (see above)
        return _fall_back(exc)
    try:
        # Only metrics are written here; the artifact root is never used, but the store needs one.
        store = SqlAlchemyStore(tracking_uri, str(Path(tracking_uri.removeprefix("sqlite:///")).parent))
        session_maker, sanitize = store.ManagedSessionMaker, store.sanitize_metric_value
        _is_nan, _stored = sanitize(float("nan"))  # what `write` unpacks
    except (AttributeError, TypeError, ValueError) as exc:
        return _fall_back(exc)

    def write(run_id: str, rows: Sequence[Row]) -> None:
        if not rows:
            return
        records: list[dict[str, Any]] = []
        newest: dict[str, dict[str, Any]] = {}
        for key, value, timestamp, step in rows:
            is_nan, stored = sanitize(value)
            record = {"key": key, "value": stored, "timestamp": timestamp, "step": step, "is_nan": is_nan,
                      "run_uuid": run_id}
            records.append(record)
            current = newest.get(key)
            if current is None or (step, timestamp, stored) > (current["step"], current["timestamp"],
                                                                current["value"]):
                newest[key] = record
        with session_maker() as session:
            stage = session.execute(select(run_stage).where(run_key == run_id)).scalar()
            if stage is None:
                raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
            if stage != LifecycleStage.ACTIVE:
                raise MlflowException(f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
                                      INVALID_PARAMETER_VALUE)
            session.execute(insert_rows, records)
            session.execute(upsert_latest, list(newest.values()))

    return write


class _TablesChanged(Exception):
    """MLflow's metric tables are no longer the ones the statements above were written for."""


def _check_tables(metrics: Any, latest: Any) -> None:
    """Fail now, not at a run's first flush, if an insert of `COLUMNS` into MLflow's tables would fail or mislead.

    A renamed column, a new one that must be filled, or another key on
    `latest_metrics` (the conflict target of the upsert) would each break every write.
    """
    for table in (metrics, latest):
        names = set(table.c.keys())
        required = {c.name for c in table.c if not c.nullable and c.default is None and c.server_default is None}
        if not set(COLUMNS) <= names or not required <= set(COLUMNS):
            raise _TablesChanged(f"table {table.name} has columns {sorted(names)}, required {sorted(required)}")
    if {c.name for c in latest.primary_key.columns} != {"key", "run_uuid"}:
        raise _TablesChanged(f"table {latest.name} is keyed by {[c.name for c in latest.primary_key.columns]}")


def _fall_back(exc: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"metrics are written with MlflowClient.log_batch, about ten times slower per value: the "
                      f"installed MLflow's internals no longer fit hw1track.tracking.sqlite_metrics "
                      f"({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=2)
    return None
