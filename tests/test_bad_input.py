"""Input the commands cannot use, and a disk that fills: one line on stderr, no traceback, nothing half-written.

Each case drives the real command line in a fresh process and checks the exit
code, the single error line and what is left on disk afterwards.
"""

from __future__ import annotations

import errno
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import hw1track
from mlflow.exceptions import MlflowException
from mounts import mounted_tmpfs, read_only

from hw1track.full_disk import disk_full_error
from hw1track.tracking.store import Store


def _one_error_line(done, exit_code: int, message: str) -> None:
    assert done.returncode == exit_code, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("hw1track: error:"), done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def _files(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


# --- tracking URIs MLflow cannot serve here ------------------------------------------------------------------------


@pytest.mark.parametrize("args, uri", [
    (["list"], "file:///{tmp}/file-store"),
    (["run", "part1_1a"], "ftp://example.org/store"),
    (["analyze", "part1_1a"], "{tmp}/plain-folder"),
    (["report"], "sqlite://"),
], ids=["file", "ftp", "plain path", "sqlite in memory"])
def test_an_unsupported_tracking_uri_is_refused_before_anything_is_created(tmp_path, args, uri):
    done = hw1track(*args, "--tracking-uri", uri.format(tmp=tmp_path), cwd=tmp_path)
    _one_error_line(done, 2, f"unsupported tracking URI '{uri.format(tmp=tmp_path)}' (--tracking-uri); use "
                             "sqlite:///PATH, http(s)://HOST:PORT, postgresql://..., mysql://..., mssql://...")
    assert not any(tmp_path.iterdir())


def test_an_unsupported_tracking_uri_from_the_environment_is_named_as_such(tmp_path):
    done = hw1track("list", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"file://{tmp_path}/mlruns"})
    _one_error_line(done, 2, "($MLFLOW_TRACKING_URI)")
    assert not any(tmp_path.iterdir())


# --- a run id that is not there ------------------------------------------------------------------------------------


def test_analyze_a_run_id_where_there_is_no_store_creates_nothing(tmp_path):
    done = hw1track("analyze", "part1_1a", "--run-id", "0123456789abcdef", cwd=tmp_path)
    _one_error_line(done, 1, "no run 0123456789abcdef in sqlite:///")
    assert not any(tmp_path.iterdir())


def test_analyze_a_run_id_the_store_does_not_hold(tmp_path):
    Store(f"sqlite:///{tmp_path / 'mlflow.db'}").experiment_id("part1_1a", create=True)
    before = _files(tmp_path)
    done = hw1track("analyze", "part1_1a", "--run-id", "0123456789abcdef", "--out", "figs", cwd=tmp_path)
    _one_error_line(done, 1, f"no run 0123456789abcdef in sqlite:///{tmp_path / 'mlflow.db'}")
    assert _files(tmp_path) == before


# --- a mlflow.db that is not a database ----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["run", "part1_1a"], ["list"], ["analyze", "part1_1a"], ["report"], ["doctor"],
                                  ["doctor", "--dry-run"]], ids=" ".join)
def test_a_mlflow_db_that_is_not_a_database_is_one_line(tmp_path, args):
    (tmp_path / "mlflow.db").write_text("my notes, saved under the wrong name\n")
    before = _files(tmp_path)
    done = hw1track(*args, cwd=tmp_path)
    _one_error_line(done, 1, f"{tmp_path / 'mlflow.db'} is not an MLflow SQLite store")
    assert _files(tmp_path) == before


# --- an output folder that cannot be made --------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["report", "--out", "a-file/report.html"], "cannot write the report to a-file/report.html: a-file is a file"),
    (["analyze", "part1_1a", "--out", "a-file/figures"], "cannot write figures to a-file/figures: a-file is a file"),
], ids=["report", "analyze"])
def test_an_output_under_a_regular_file_is_refused_before_any_work(tmp_path, args, message):
    (tmp_path / "a-file").write_text("not a folder\n")
    before = _files(tmp_path)
    done = hw1track(*args, cwd=tmp_path)  # no store here: the output is checked first, or this would say so
    _one_error_line(done, 2, message)
    assert _files(tmp_path) == before


def test_a_report_into_a_read_only_place_is_refused_before_any_work(tmp_path):
    place = tmp_path / "published"
    place.mkdir()
    with read_only(place) as mount:
        done = mount.hw1track("report", "--out", str(place / "reports" / "report.html"), cwd=tmp_path)
    _one_error_line(done, 2, f"cannot write the report to {place}/reports/report.html: {place} is on a read-only")
    assert not any(place.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["published"]


# --- a disk that fills ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_disk_that_fills_while_weights_are_logged_is_one_line_and_the_runs_end_failed(tmp_path):
    store = tmp_path / "store"
    # part1_3a's 1.9M-parameter net: 7.5 MB of weights, on a 3 MB disk that the empty store leaves 2 MB of
    with mounted_tmpfs(store, size="3m"):
        started = time.monotonic()
        done = hw1track("run", "part1_3a", "--set", "max_epochs=1", "--set", "train_size=256", "--set",
                        "test_size=256", "--seeds", "1", "--threads", "1", cwd=store)
        elapsed = time.monotonic() - started
        _one_error_line(done, 1, f"no space left on device while writing to {store} (on the disk mounted at {store}")
        with closing(sqlite3.connect(store / "mlflow.db")) as database:  # closed before the disk is unmounted
            statuses = sorted(status for status, in database.execute("SELECT status FROM runs"))
        artifacts = sorted(p.name for p in (store / "mlruns").rglob("*") if p.is_file())
    assert statuses == ["FAILED", "FAILED"]  # the invocation and its model
    assert artifacts == ["run_config.json"]  # no weights, whole or in part
    assert elapsed < 120, elapsed


@pytest.mark.parametrize("raised, where", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/weights.pt"), "/data"),
    (MlflowException("[Errno 28] No space left on device"), "/store"),
    (MlflowException("(sqlite3.OperationalError) database or disk is full"), "/store"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "/store"),
], ids=["oserror", "wrapped", "sqlite", "quota"])
def test_a_full_disk_is_recognised_however_it_is_wrapped(raised, where):
    try:
        try:
            raise raised
        except Exception as inner:
            raise RuntimeError("while logging") from inner
    except RuntimeError as outer:
        error = disk_full_error(outer, ["/store"])
    assert error is not None and f"while writing to {where} " in str(error)
    assert ("quota" in str(error)) == (getattr(raised, "errno", None) == errno.EDQUOT)
    assert disk_full_error(RuntimeError("something else"), ["/store"]) is None
