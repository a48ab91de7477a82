"""The units an invocation's training splits into when they run apart, each a task of its own (`ray_executor`).

A unit is one replicate, or one model of one replicate where the experiment's
models are independent of each other: those a run module hands to
`RunContext.train_classifiers` (part1_1b's three CNNs, part1_3b's eleven
widths), which share nothing but the data. Everything else stays one unit per
replicate: nets trained side by side as one stack, or measured together once
trained (part1_2c's Hessians, part1_3c_i's interpolation), need each other.

Which case an experiment is, is found by running its module against a
`_Planner`, a stand-in context that only notes the names `train_classifiers`
is given and stops the module at anything else, so no experiment has to
declare its models twice and no data are touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hw1track.study.discovery import Experiment


@dataclass(frozen=True)
class Unit:
    """Replicate `replicate`, all of its models (`model` None) or only the one called `model`."""

    replicate: int
    model: str | None = None

    def describe(self) -> str:
        return f"replicate {self.replicate}" + (f", model {self.model}" if self.model else "")


def units(experiment: Experiment, config: Any, seeds: int) -> list[Unit]:
    """The invocation's units, replicate by replicate (each replicate's models in the module's order)."""
    models = independent_models(experiment, config)
    return [Unit(replicate, model) for replicate in range(seeds) for model in (models or (None,))]


def independent_models(experiment: Experiment, config: Any) -> tuple[str, ...] | None:
    """The names of the models `experiment` trains independently of each other, or None if they are not."""
    planner = _Planner()
    try:
        experiment.module.run(config, planner)
    except _Dependent:
        return None
    return tuple(planner.models) or None


class _Dependent(Exception):
    """The run module asked its context for something other than `train_classifiers`."""


class _Planner:
    """What a run module sees while its units are planned: the names of independent models are noted,
    anything else stops it."""

    def __init__(self) -> None:
        self.models: list[str] = []

    def train_classifiers(self, models: Mapping[str, Any], cfg: Any, **options: Any) -> None:
        self.models.extend(models)

    def __getattr__(self, name: str) -> Any:
        raise _Dependent(name)
