"""Metrics handed to the writer process are stored exactly once, whatever happens to either process.

The writer serves tracking servers (a local SQLite store is written in-process),
so these tests log to a real `mlflow server` on loopback.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.exceptions import MlflowException
from servers import tracking_server  # noqa: F401 (fixture)

from hw1track.tracking import metric_writer
from hw1track.tracking.query import StoreReader
from hw1track.tracking.runs import TrackedRun, parent_run
from hw1track.tracking.store import Store


@pytest.fixture
def store_uri(tracking_server):  # noqa: F811
    return tracking_server.uri


@pytest.fixture
def reader(store_uri):
    return StoreReader(store_uri)


def _steps_and_values(reader, run_id, key):
    history = sorted(reader.client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in history], [m.value for m in history]


def test_a_writer_that_dies_mid_run_loses_nothing_and_duplicates_nothing(store_uri, reader):
    with parent_run(Store(store_uri), "unit", "quick", "p", {}) as parent:
        with parent.child("c", {"seed": 0}) as child:
            child.log_series({"loss": [i / 7 for i in range(2500)]}, first_step=1)  # a full batch: handed over
            assert child._writer is not None
            os.kill(child._writer.pid, signal.SIGKILL)
            child.log_series({"loss": [i / 7 for i in range(2500, 4000)]}, first_step=2501)
            run_id = child.run_id
    steps, values = _steps_and_values(reader, run_id, "loss")
    assert steps == list(range(1, 4001))
    assert values == [i / 7 for i in range(4000)]
    assert reader.client.get_run(run_id).info.status == "FINISHED"


def test_a_message_cut_in_half_by_ctrl_c_loses_nothing(store_uri, reader, monkeypatch):
    real_write = os.write

    def half_then_ctrl_c(fd, data):
        monkeypatch.setattr(metric_writer.os, "write", real_write)
        real_write(fd, bytes(data[:len(data) // 2]))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with parent_run(Store(store_uri), "unit", "quick", "p", {}) as parent:
            with parent.child("c", {"seed": 0}) as child:
                child.log_series({"loss": [i / 7 for i in range(1500)]}, first_step=1)
                monkeypatch.setattr(metric_writer.os, "write", half_then_ctrl_c)
                child.log_series({"loss": [i / 7 for i in range(1500, 3000)]}, first_step=1501)
    steps, values = _steps_and_values(reader, child.run_id, "loss")
    assert steps == list(range(1, 3001))
    assert values == [i / 7 for i in range(3000)]
    assert reader.client.get_run(child.run_id).info.status == "KILLED"


def test_a_store_error_met_by_the_writer_is_raised_in_the_training_process(store_uri):
    store = Store(store_uri)
    run_id = store.client.create_run(store.experiment_id("unit", create=True)).info.run_id
    run = TrackedRun(store.client, run_id)
    store.client.delete_run(run_id)  # a deleted run accepts no metrics
    run.log_series({"loss": [float(i) for i in range(1500)]}, first_step=1)
    assert run._writer is not None
    with pytest.raises(MlflowException, match="active"):
        run.flush()


@pytest.mark.slow
def test_what_was_handed_over_is_stored_even_after_kill_9_of_the_training_process(tmp_path, store_uri, reader):
    script = textwrap.dedent(f"""
        import os, signal
        from hw1track.tracking.runs import parent_run
        from hw1track.tracking.store import Store
        with parent_run(Store({store_uri!r}), "unit", "quick", "p", {{}}) as parent:
            with parent.child("c", {{"seed": 0}}) as child:
                child.log_series({{"loss": [i / 3 for i in range(2500)]}}, first_step=1)
                print(child.run_id, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    run_id = done.stdout.split()[0]
    deadline = time.time() + 120
    while time.time() < deadline and len(reader.client.get_metric_history(run_id, "loss")) < 2500:
        time.sleep(0.5)  # the orphaned writer is still writing
    steps, values = _steps_and_values(reader, run_id, "loss")
    assert steps == list(range(1, 2501))
    assert values == [i / 3 for i in range(2500)]
