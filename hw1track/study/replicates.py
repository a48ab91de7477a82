"""Replicates: every configuration trained N times with independent seeds, so that an effect can be told from noise.

A replicate changes only the training randomness, the initial weights and the
minibatch order, both driven by the model's own seed; the data (subsets,
shuffled labels, sample grids) are drawn from the invocation's base seed and
stay fixed across replicates. Replicate 0 keeps the seed a model had before
replicates existed, so `--seeds 1` is the single-seed study number for number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hw1track.errors import UsageError
from hw1track.tracking.names import PARAM_REPLICATE

# Replicate r of a model whose base seed is s trains with seed s + r·SEED_STRIDE. Base seeds within an
# experiment are the config's seed plus a model number (at most a few hundred), so no two models of one
# invocation share a seed; the seed stays a small, readable number in the UI.
SEED_STRIDE = 1_000_000
MAX_SEEDS = 1_000

# How many replicates a preset trains unless --seeds says otherwise: `quick` must show a spread
# while staying within minutes, `full` is the smallest count whose t-interval is not absurdly wide.
DEFAULT_SEEDS = {"quick": 2, "full": 3}
SEPARATOR = "#"  # between a model's name and its replicate index in a child run's name


def model_name(run_name: str) -> str:
    """The model a child run trains, whichever replicate it is: its name without `#r` (the param `model`)."""
    return run_name.split(SEPARATOR)[0]


def default_seeds(preset: str) -> int:
    return DEFAULT_SEEDS.get(preset, 1)


def check_seeds(seeds: int) -> int:
    if not 1 <= seeds <= MAX_SEEDS:
        raise UsageError(f"--seeds must be between 1 and {MAX_SEEDS}, got {seeds}")
    return seeds


@dataclass(frozen=True)
class Replicate:
    """One of the N trainings of every configuration of an invocation."""

    index: int

    def seed(self, base: int) -> int:
        """The seed of this replicate of a model whose replicate 0 is seeded `base`."""
        return base + SEED_STRIDE * self.index

    def name(self, name: str) -> str:
        """The child run's name: unchanged for replicate 0, `name#r` for the others (see `model_name`)."""
        return name if self.index == 0 else f"{name}{SEPARATOR}{self.index}"

    @property
    def params(self) -> dict[str, Any]:
        return {PARAM_REPLICATE: self.index}


def replicates(n: int) -> tuple[Replicate, ...]:
    return tuple(Replicate(index) for index in range(n))
