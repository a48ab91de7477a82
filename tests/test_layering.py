"""The library reaches the experiments only through discovery, and experiments do not lean on each other.

`runs/` and `analysis/` are plug-ins: the library must work whatever they hold,
and one experiment's module must be editable without changing another's
models. Imports are read from the source (ast), so a lazy import inside a
function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "hw1track"
PLUG_INS = {"runs", "analysis"}
DISCOVERY = LIBRARY / "study" / "discovery.py"


def _imported(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, module) for every import in `path` (a module of a package under `root`), relative ones made
    absolute; string literals given to `importlib.import_module` or `__import__` count too."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(part for part in [*parent, base] if part)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and _names_importer(node.func):
            found.append((node.lineno, node.args[0].value))
    return found


def _names_importer(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in {"import_module", "__import__"}


def _top(module: str) -> str:
    return module.split(".")[0]


def _python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_the_checks_see_imports_of_every_kind(tmp_path):
    package = tmp_path / "runs"
    package.mkdir()
    module = package / "probe.py"
    module.write_text("import runs.a\nfrom runs import b\nfrom .c import d\nimport importlib\n"
                      "def f():\n    from analysis import e\n    importlib.import_module('runs.g')\n")
    seen = {name for _, name in _imported(module, root=tmp_path)}
    assert {"runs.a", "runs.b", "runs.c", "analysis", "runs.g"} <= seen


@pytest.mark.parametrize("path", _python_files(LIBRARY), ids=lambda p: p.relative_to(REPO).as_posix())
def test_the_library_reaches_runs_and_analysis_only_through_discovery(path):
    if path == DISCOVERY:
        return
    reaching = [f"line {line}: {name}" for line, name in _imported(path) if _top(name) in PLUG_INS]
    assert not reaching, f"{path.relative_to(REPO)} reaches the experiments outside discovery: {reaching}"


@pytest.mark.parametrize("path", _python_files(LIBRARY / "tracking"), ids=lambda p: p.name)
def test_tracking_does_not_depend_on_the_study_layer(path):
    """Tracking files any model as a run; what an experiment is belongs to `study`, which uses tracking."""
    reaching = [f"line {line}: {name}" for line, name in _imported(path) if name.startswith("hw1track.study")]
    assert not reaching, f"{path.relative_to(REPO)} imports the study layer: {reaching}"


@pytest.mark.parametrize("path", _python_files(REPO / "runs"), ids=lambda p: p.name)
def test_no_run_module_imports_another(path):
    """What two experiments share lives in the library; otherwise editing one changes the other's models."""
    reaching = [f"line {line}: {name}" for line, name in _imported(path) if _top(name) == "runs"]
    assert not reaching, f"{path.relative_to(REPO)} imports another run module: {reaching}"
