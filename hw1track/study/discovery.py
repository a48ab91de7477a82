"""Experiments as plug-ins: every module in `runs/` is one, found by name.

This is the only place the library reaches into `runs/` and `analysis/`: a
run module declares `Config`, `PRESETS`, `DATA` ("mnist" or "synthetic") and
`run(cfg, ctx)`, an analysis module `figures(reader, parent)` and, optionally,
`claims(reader, parent)`; see the README's
"Adding an experiment".
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from hw1track.config import resolve
from hw1track.errors import UsageError


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str
    module: ModuleType

    @property
    def presets(self) -> Mapping[str, Any]:
        return self.module.PRESETS

    @property
    def dataset_presets(self) -> Mapping[str, Mapping[str, Any]]:
        """{dataset: {preset: config}} (DATASET_PRESETS): an image set's own presets, where MNIST's fail on it."""
        return getattr(self.module, "DATASET_PRESETS", {})

    def config(self, preset: str, assignments: Sequence[str] = ()) -> Any:
        """The validated config of `preset` for the dataset the assignments choose, with the assignments applied."""
        return resolve(self.presets, preset, assignments, self.dataset_presets)

    @property
    def threads(self) -> int | None:
        """The intra-op thread count the experiment runs best with, if it declares one (THREADS)."""
        return getattr(self.module, "THREADS", None)

    @property
    def uses_mnist(self) -> bool:
        return getattr(self.module, "DATA", "synthetic") == "mnist"

    def analysis(self) -> ModuleType:
        return importlib.import_module(f"analysis.{self.name}")

    def claims(self, reader: Any, parent: Any) -> list:
        """The homework's questions answered from the store (`stats.claims`), if the analysis states any."""
        stated = getattr(self.analysis(), "claims", None)
        return list(stated(reader, parent)) if stated else []


def experiments_folder() -> Path:
    """The folder of the run modules: with the library, the source that decides what a model becomes.

    The tracking layer ties models to a digest of that source
    (`tracking.code_version`) but knows no experiments, so it is handed this.
    """
    import runs

    return Path(runs.__file__).resolve().parent


def discover() -> dict[str, Experiment]:
    """Every module in `runs/`, in study order (names sort as part1_1a < part1_1b < ... < part1_3c_ii)."""
    import runs

    found = {}
    for info in sorted(pkgutil.iter_modules(runs.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"runs.{info.name}")
        summary = (module.__doc__ or info.name).strip().splitlines()[0]
        found[info.name] = Experiment(info.name, summary, module)
    return found


def get_experiment(name: str) -> Experiment:
    known = discover()
    if name not in known:
        raise UsageError(f"unknown experiment {name!r} (known: {', '.join(known)}, or all)")
    return known[name]
