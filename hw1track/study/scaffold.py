"""`hw1track new NAME`: a new experiment that runs, draws and passes its test as written.

A student extending the homework starts from working code instead of from the
contracts in the README: the skeleton trains a few small MLPs along one swept
knob, draws one figure from the store, and tests both at tiny settings. Every
part is meant to be edited; nothing else in the project has to change, since
`hw1track.study.discovery` finds the new modules by their folder.
"""

from __future__ import annotations

import importlib.util
import keyword
from dataclasses import dataclass
from pathlib import Path
from string import Template

from hw1track.errors import Hw1Error, UsageError
from hw1track.study.discovery import experiments_folder

DATA_KINDS = ("mnist", "synthetic")

# The skeleton's files, one folder per kind of data, as string.Template texts: `$name` is the only
# placeholder, so Python's braces stay as they are.
TEMPLATES = Path(__file__).with_name("templates")
FILES = ("run.py.tmpl", "analysis.py.tmpl", "test.py.tmpl")  # in the order of `Written`
RESERVED = {"all"}  # `hw1track run all` means every experiment


@dataclass(frozen=True)
class Written:
    """The files a new experiment consists of, in the order a newcomer reads them."""

    run: Path
    analysis: Path
    test: Path


def project_root() -> Path:
    """The source tree the experiments are discovered in: the folder holding `runs/`.

    An installed (non-editable) copy has no tests/ or pyproject.toml beside it,
    and files written into site-packages would be lost at the next install.
    """
    root = experiments_folder().parent
    if not (root / "pyproject.toml").is_file():
        raise Hw1Error(f"no project source tree at {root} (runs/ without pyproject.toml beside it); "
                       f"run `hw1track new` from an editable install (pip install -e .)")
    return root


def paths_for(name: str, root: Path) -> Written:
    return Written(root / "runs" / f"{name}.py", root / "analysis" / f"{name}.py", root / "tests" / f"test_{name}.py")


def check_name(name: str, root: Path) -> Written:
    """The files `name` would get; a `UsageError` for a name that cannot be a new experiment."""
    if not name.isidentifier():
        raise UsageError(f"{name!r} is not a valid Python identifier (use letters, digits and _, e.g. part1_3d)")
    if keyword.iskeyword(name):
        raise UsageError(f"{name!r} is a Python keyword, which `import` cannot name; choose another name")
    if name.startswith("_"):
        raise UsageError(f"{name!r} starts with _, and modules named so are not discovered as experiments")
    if name in RESERVED:
        raise UsageError(f"{name!r} is reserved: `hw1track run all` runs every experiment")
    paths = paths_for(name, root)
    for path in (paths.run, paths.analysis, paths.test):
        if path.exists():
            raise UsageError(f"{path.relative_to(root)} already exists; choose another name (nothing is overwritten)")
    # `from runs import NAME` would work, but a module that shadows an importable one confuses every
    # notebook and script that puts runs/ or analysis/ on its path.
    if importlib.util.find_spec(name) is not None:
        raise UsageError(f"{name!r} is the name of an importable module; choose another name")
    return paths


def create(name: str, data: str = "mnist", root: Path | None = None) -> Written:
    """Write the run module, the analysis module and the test of experiment `name`; never overwrites."""
    if data not in DATA_KINDS:
        raise UsageError(f"unknown data {data!r} (known: {', '.join(DATA_KINDS)})")
    root = root or project_root()
    paths = check_name(name, root)
    texts = [Template((TEMPLATES / data / file).read_text(encoding="utf-8")).substitute(name=name) for file in FILES]
    paths.test.parent.mkdir(exist_ok=True)
    written: list[Path] = []
    try:
        for path, text in zip((paths.run, paths.analysis, paths.test), texts):
            with path.open("x", encoding="utf-8") as file:  # "x": a file that appeared meanwhile is kept
                file.write(text)
            written.append(path)
    except FileExistsError as exc:
        for path in written:  # half an experiment would break discovery for everyone
            path.unlink()
        raise UsageError(f"{Path(exc.filename).relative_to(root)} already exists; nothing was written") from None
    return paths
