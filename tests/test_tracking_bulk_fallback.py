"""When MLflow's internals move, runs on a local store log through `log_batch` instead: slower, never failed.

The move is made for real in this process, on MLflow's own modules, after the
store is open (MLflow's store has then imported what it needs, as it has in a
real run), so only the bulk path meets it.
"""

import importlib
import sys
import warnings

import pytest

from hw1track.tracking import sqlite_metrics
from hw1track.tracking.runs import LOCAL_ROWS_PER_WRITE, MAX_METRICS_PER_BATCH, parent_run
from hw1track.tracking.store import Store

MODELS = "mlflow.store.tracking.dbmodels.models"  # MLflow's table definitions, which the bulk path inserts into


def _module_gone(monkeypatch):
    monkeypatch.setitem(sys.modules, MODELS, None)  # `import` now raises ModuleNotFoundError


def _class_renamed(monkeypatch):
    monkeypatch.delattr(importlib.import_module(MODELS), "SqlLatestMetric")  # ImportError: cannot import name


def _fallback_warnings(caught):
    return [w for w in caught if issubclass(w.category, RuntimeWarning) and "log_batch" in str(w.message)]


@pytest.fixture
def unannounced(monkeypatch):
    """This process as if no run had fallen back yet, so that the one warning it owes is still to come."""
    monkeypatch.setattr(sqlite_metrics, "_warned", False)


def test_the_installed_mlflow_fits_the_bulk_path(store_uri, unannounced):
    Store(store_uri).client  # the database exists, as it does when a run starts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert callable(sqlite_metrics.bulk_writer(store_uri))
    assert _fallback_warnings(caught) == []


@pytest.mark.parametrize("move", [_module_gone, _class_renamed])
def test_moved_internals_send_every_metric_through_log_batch_with_one_warning(store_uri, reader, tmp_path,
                                                                              monkeypatch, unannounced, move):
    store, other_store = Store(store_uri), Store(f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}")
    store.client, other_store.client
    move(monkeypatch)
    # More rows than one request takes, so they go the way a server's do (a writer process), and a few,
    # written at the run's end from this process; neither is a batch the bulk path would have written yet.
    many = [i / 7 for i in range(MAX_METRICS_PER_BATCH + 500)]
    assert len(many) < LOCAL_ROWS_PER_WRITE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sqlite_metrics.bulk_writer(store_uri) is None
        with parent_run(store, "unit", "quick", "p", {}) as parent:
            parent.log_metrics({"training_seconds": 1.5}, step=0)
            with parent.child("many", {"seed": 0}) as child:
                child.log_series({"loss": many}, first_step=1)
                child.log_metrics({"train_loss": float("nan"), "test_loss": float("inf")}, step=0)
                assert child._writer is not None
                ids = {"many": child.run_id}
            with parent.child("few", {"seed": 1}) as child:
                child.log_metrics({"train_loss": 0.5}, step=0)
                child.log_metrics({"train_loss": 0.25}, step=1)
                ids["few"] = child.run_id
        with parent_run(other_store, "unit", "quick", "p", {}) as other:  # another store, still one warning
            other.log_metrics({"training_seconds": 2.5}, step=0)
    assert len(_fallback_warnings(caught)) == 1

    history = reader.client.get_metric_history
    assert sorted((m.step, m.value) for m in history(ids["many"], "loss")) == list(enumerate(many, start=1))
    stored = reader.client.get_run(ids["many"]).data.metrics
    assert stored["test_loss"] > 1e308 and stored["train_loss"] != stored["train_loss"]  # inf and NaN kept
    assert [(m.step, m.value) for m in history(ids["few"], "train_loss")] == [(0, 0.5), (1, 0.25)]
    assert [m.value for m in history(parent.run_id, "training_seconds")] == [1.5]
    assert [m.value for m in other_store.client.get_metric_history(other.run_id, "training_seconds")] == [2.5]
    assert {reader.client.get_run(run_id).info.status for run_id in [parent.run_id, *ids.values()]} == {"FINISHED"}
