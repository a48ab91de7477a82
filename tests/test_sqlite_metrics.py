"""Rows written in bulk into a local store read back through MLflow exactly as `log_batch` stores them."""

import math

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from hw1track.tracking import sqlite_metrics
from hw1track.tracking.store import Store

KEYS = ("loss", "grad_norm")


def _two_runs(store_uri):
    store = Store(store_uri)
    experiment_id = store.experiment_id("unit", create=True)
    return store.client, [store.client.create_run(experiment_id).info.run_id for _ in range(2)]


def _stored(client, run_id):
    """Everything MLflow returns about a run's metrics: every key's history and its latest value."""
    history = {key: sorted((m.step, m.timestamp, m.value if not math.isnan(m.value) else "nan")
                           for m in client.get_metric_history(run_id, key)) for key in KEYS}
    latest = {key: value if not math.isnan(value) else "nan" for key, value in client.get_run(run_id).data.metrics.items()}
    return history, latest


def test_bulk_rows_read_back_as_log_batch_stores_them(store_uri):
    client, (bulk_run, batch_run) = _two_runs(store_uri)
    # Out-of-order steps, a newer timestamp and a larger value at the same step, NaN, ±inf.
    rows = [("loss", 3.0, 1000, 5), ("loss", 1.0, 1001, 2), ("loss", 2.0, 1002, 5), ("loss", 2.5, 999, 5),
            ("grad_norm", float("nan"), 1000, 1), ("grad_norm", float("inf"), 1000, 2),
            ("grad_norm", float("-inf"), 1000, 3), ("grad_norm", 0.25, 1000, 3)]
    write = sqlite_metrics.bulk_writer(store_uri)
    write(bulk_run, rows[:4])
    write(bulk_run, rows[4:])
    write(bulk_run, rows)  # written twice, as after a writer failure: stored once
    client.log_batch(batch_run, metrics=[Metric(*row) for row in rows[:4]])
    client.log_batch(batch_run, metrics=[Metric(*row) for row in rows[4:]])

    assert _stored(client, bulk_run) == _stored(client, batch_run)
    assert _stored(client, bulk_run)[1]["loss"] == 2.0  # newest by (step, timestamp, value)
    assert len(client.get_metric_history(bulk_run, "loss")) == 4


def test_a_later_batch_moves_the_latest_value_only_when_newer(store_uri):
    client, (run_id, _) = _two_runs(store_uri)
    write = sqlite_metrics.bulk_writer(store_uri)
    write(run_id, [("loss", 1.0, 1000, 10)])
    write(run_id, [("loss", 9.0, 2000, 3)])  # an older step, logged later
    assert client.get_run(run_id).data.metrics["loss"] == 1.0
    write(run_id, [("loss", 0.5, 1000, 11)])
    assert client.get_run(run_id).data.metrics["loss"] == 0.5


def test_a_deleted_or_unknown_run_is_refused_with_mlflows_error(store_uri):
    client, (run_id, _) = _two_runs(store_uri)
    write = sqlite_metrics.bulk_writer(store_uri)
    client.delete_run(run_id)
    with pytest.raises(MlflowException, match="active"):
        write(run_id, [("loss", 1.0, 1000, 1)])
    with pytest.raises(MlflowException, match="not found"):
        write("0" * 32, [("loss", 1.0, 1000, 1)])
    client.restore_run(run_id)
    assert client.get_metric_history(run_id, "loss") == []


def test_only_a_local_sqlite_store_is_written_in_bulk():
    assert sqlite_metrics.bulk_writer("http://127.0.0.1:5000") is None
    assert sqlite_metrics.bulk_writer("postgresql://localhost/mlflow") is None
