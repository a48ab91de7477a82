"""The code version a trained model is tied to, so that only models of the same code are reused.

A clean checkout is its git commit. A tree with uncommitted edits is the commit
plus a digest of the source that trains (`hw1track/` and the experiments'
folder `runs/`, which the caller names; tracked or not), so two invocations
from the same edited tree share models, and any edit to that source, committed
or not, means training again; edits elsewhere (analysis, tests, documentation)
do not. Outside git the package version plus the same digest stands in for the
commit. `HW1TRACK_CODE_VERSION` declares a version by hand, for when you know
that your edits do not change what is trained.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import hw1track
from hw1track.tracking.provenance import git_commit

ENV = "HW1TRACK_CODE_VERSION"


def source_digest(folders: Iterable[Path]) -> str:
    """A digest of every .py file under `folders`: names and contents, in a fixed order."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            digest.update(f"{Path(folder).name}/{path.relative_to(folder).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:12]


def training_source(experiments: Path) -> list[Path]:
    """The folders whose code decides what a model becomes: the library and the experiments' folder.

    Tracking knows no experiments, so their folder is the caller's to name
    (`hw1track.study.discovery.experiments_folder`).
    """
    return [Path(hw1track.__file__).resolve().parent, Path(experiments).resolve()]


def code_version(experiments: Path) -> str:
    """The version models trained now are tied to; `experiments`: the run modules' folder (`training_source`)."""
    declared = os.environ.get(ENV, "").strip()
    if declared:
        return declared
    commit = git_commit()
    if commit != "unknown" and not commit.endswith("-dirty"):
        return commit
    base = commit if commit != "unknown" else f"hw1track-{hw1track.__version__}"
    return f"{base}+{source_digest(training_source(experiments))}"
