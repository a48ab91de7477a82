"""`hw1track new`: a new experiment runs, is analysed and passes its own generated test, as written.

Everything happens in a copy of the project, never in the real runs/: other test
sessions discover experiments there, and a half-written one would break them.
Commands run with the copy as working directory, so that `python -m` imports
the copy's hw1track, runs and analysis rather than the installed ones.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, hw1track

from hw1track.errors import UsageError
from hw1track.study.scaffold import create
from hw1track.tracking.query import StoreReader

TINY = ("--set", "epochs=1", "--set", "train_size=500", "--set", "test_size=200", "--threads", "1")


@pytest.fixture
def project(tmp_path) -> Path:
    """The parts of the project an experiment lives in, copied; tests/ holds only the shared fixtures."""
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("hw1track", "runs", "analysis"):
        shutil.copytree(REPO / folder, copy / folder, ignore=ignore)
    (copy / "tests").mkdir()
    shutil.copy2(REPO / "tests" / "conftest.py", copy / "tests" / "conftest.py")
    shutil.copy2(REPO / "pyproject.toml", copy / "pyproject.toml")
    return copy


def files_of(project: Path) -> dict[str, bytes]:
    return {str(path.relative_to(project)): path.read_bytes()
            for folder in ("runs", "analysis", "tests") for path in (project / folder).glob("*.py")}


def refused_in_one_line(done: subprocess.CompletedProcess, message: str) -> bool:
    return (done.returncode == 2 and done.stderr.startswith("hw1track: error:") and message in done.stderr
            and done.stderr.count("\n") == 1)


@pytest.mark.slow
def test_a_new_experiment_runs_is_analysed_and_passes_its_generated_test(project, tmp_path):
    made = hw1track("new", "demo_exp", cwd=project)
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert [line.split()[1] for line in lines[:3]] == ["runs/demo_exp.py", "analysis/demo_exp.py",
                                                       "tests/test_demo_exp.py"]
    assert lines[3:7] == ["next:", "  hw1track run demo_exp", "  hw1track analyze demo_exp",
                          "  pytest tests/test_demo_exp.py"]
    assert len(lines) == 8 and "tests/test_reliability.py" in lines[7]  # where every experiment is listed
    assert all((project / path).is_file() for path in ("runs/demo_exp.py", "analysis/demo_exp.py",
                                                       "tests/test_demo_exp.py"))
    assert not (REPO / "runs" / "demo_exp.py").exists()
    fitted = hw1track("new", "demo_fit", "--data", "synthetic", cwd=project)
    assert fitted.returncode == 0, fitted.stderr

    before = files_of(project)
    for args, message in ((["demo_exp"], "runs/demo_exp.py already exists"),
                          (["part1_1b"], "runs/part1_1b.py already exists"),
                          (["my-exp"], "'my-exp' is not a valid Python identifier"),
                          (["json"], "'json' is the name of an importable module")):
        assert refused_in_one_line(hw1track("new", *args, cwd=project), message), args
    assert files_of(project) == before  # refusals write nothing, and never overwrite

    listed = hw1track("list", cwd=project)
    assert listed.returncode == 0, listed.stderr
    summary = "demo_exp: final accuracy of a one-hidden-layer MLP on MNIST as its width grows."
    assert any(line.startswith("demo_exp") and line.endswith(summary) for line in listed.stdout.splitlines())

    ran = hw1track("run", "demo_exp", *TINY, cwd=project)
    assert ran.returncode == 0, ran.stderr
    drawn = hw1track("analyze", "demo_exp", cwd=project)
    assert drawn.returncode == 0, drawn.stderr
    reader = StoreReader(f"sqlite:///{project / 'mlflow.db'}")
    parent = reader.latest_parent("demo_exp")
    children = reader.children(parent)
    assert [child.info.run_name for child in children] == ["width16", "width64", "width256",
                                                          "width16#1", "width64#1", "width256#1"]
    assert all({"train_loss", "test_loss", "train_acc", "test_acc"} <= set(child.data.metrics) for child in children)
    assert (project / "figures" / "demo_exp" / "accuracy_vs_width.png").is_file()
    assert reader.artifacts(parent, "figures") == ["figures/accuracy_vs_width.png"]
    assert "[" in drawn.stdout and "demo_exp.wider_is_more_accurate" in drawn.stdout  # the claim, printed
    assert "claims.json" in reader.artifacts(parent)

    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             f"--basetemp={tmp_path / 'inner'}", "tests/test_demo_exp.py", "tests/test_demo_fit.py"],
                            cwd=project, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "6 passed" in tested.stdout.splitlines()[-1]


@pytest.mark.parametrize("name, message", [
    ("2fast", "not a valid Python identifier"),
    ("my-exp", "not a valid Python identifier"),
    ("class", "is a Python keyword"),
    ("_draft", "starts with _"),
    ("all", "is reserved"),
    ("part1_1b", "runs/part1_1b.py already exists"),
    ("torch", "the name of an importable module"),
])
def test_a_name_that_cannot_be_a_new_experiment_is_refused_before_anything_is_written(project, name, message):
    before = files_of(project)
    with pytest.raises(UsageError, match=message) as refused:
        create(name, root=project)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    assert files_of(project) == before


def test_an_existing_analysis_or_test_file_is_never_overwritten(project):
    (project / "tests" / "test_demo_exp.py").write_text("# someone's own test\n")
    before = files_of(project)
    with pytest.raises(UsageError, match="tests/test_demo_exp.py already exists"):
        create("demo_exp", root=project)
    assert files_of(project) == before
