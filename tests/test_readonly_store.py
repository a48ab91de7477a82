"""A store the user may not write (a read-only mount, a shared folder, a course's published results) can be read.

The store is made by a real run, stripped of its lock files as a published copy
would be, and put on a real read-only mount (see `mounts`). The reading commands
work from a fresh process and say what they could not log back; the writing
ones are refused in one line; the store's files stay exactly as they were.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from conftest import run_quick
from mounts import Mount, read_only

SETTINGS = ("epochs=30", "targets=sinc")  # part1_1a in seconds: three small nets on one target


def _state(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder below `folder`, with size, modification time and content digest."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder")
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def published(tmp_path_factory, data_root) -> Path:
    """A store with one finished invocation of part1_1a and no lock files."""
    folder = tmp_path_factory.mktemp("published")
    run_quick("part1_1a", f"sqlite:///{folder / 'mlflow.db'}", *SETTINGS, seeds=1)
    (folder / "mlflow.db.lock").unlink(missing_ok=True)
    shutil.rmtree(folder / "mlflow.db-locks", ignore_errors=True)
    return folder


@pytest.fixture(scope="module")
def mounted(published) -> Mount:
    with read_only(published) as mount:
        yield mount


@pytest.fixture
def unchanged(published, mounted):
    """The store's files are the same after the test as before it: nothing created, nothing touched."""
    before = _state(published)
    yield
    assert _state(published) == before


def _clean(done) -> None:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "hw1track: error" not in done.stderr, done.stderr


@pytest.mark.slow
def test_list_shows_the_finished_run(mounted, published, tmp_path, unchanged):
    done = mounted.hw1track("list", "--tracking-uri", f"sqlite:///{published / 'mlflow.db'}", cwd=tmp_path)
    _clean(done)
    line = next(line for line in done.stdout.splitlines() if line.startswith("part1_1a"))
    assert "finished (quick" in line


@pytest.mark.slow
def test_analyze_writes_the_figures_elsewhere_and_says_they_were_not_logged(mounted, published, tmp_path,
                                                                           unchanged):
    out = tmp_path / "figures"
    done = mounted.hw1track("analyze", "part1_1a", "--out", str(out), "--tracking-uri",
                            f"sqlite:///{published / 'mlflow.db'}", cwd=tmp_path)
    _clean(done)
    assert {p.name for p in (out / "part1_1a").iterdir()} == {"loss_sinc.png", "predictions_sinc.png"}
    (summary,) = [line for line in done.stdout.splitlines() if line.startswith("part1_1a:")]
    assert "not logged to run" in summary and "read-only file system" in summary, summary


@pytest.mark.slow
def test_report_writes_the_page_elsewhere_and_says_it_was_not_logged(mounted, published, tmp_path, unchanged):
    out = tmp_path / "pages" / "report.html"
    done = mounted.hw1track("report", "--out", str(out), "--tracking-uri", f"sqlite:///{published / 'mlflow.db'}",
                            cwd=tmp_path)
    _clean(done)
    assert 'id="part1_1a"' in out.read_text()
    assert "not logged to MLflow" in done.stdout and "read-only file system" in done.stdout, done.stdout


@pytest.mark.slow
def test_doctor_dry_run_checks_the_store(mounted, published, tmp_path, unchanged):
    done = mounted.hw1track("doctor", "--dry-run", "--tracking-uri", f"sqlite:///{published / 'mlflow.db'}",
                            cwd=tmp_path)
    _clean(done)
    assert "0 orphaned runs" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", [("doctor",), ("run", "part1_1a", "--set", "epochs=31", "--set", "targets=sinc")],
                         ids=["doctor", "run"])
def test_commands_that_write_are_refused_in_one_line(mounted, published, tmp_path, unchanged, command):
    done = mounted.hw1track(*command, "--tracking-uri", f"sqlite:///{published / 'mlflow.db'}", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"hw1track: error: cannot write the tracking store in {published}"), done.stderr
