"""--set parsing and validation: typos and bad values are refused before anything runs."""

from dataclasses import dataclass

import pytest

from hw1track.config import (IDENTITY, PRESENTATION, SWEEP, MnistSplits, apply_overrides, identity_params, resolve,
                             roles, setting, to_params)
from hw1track.errors import UsageError
from runs import part1_1a


def test_overrides_are_parsed_by_field_type():
    config = apply_overrides(part1_1a.Config(), ["epochs=7", "lr=0.01", "targets=sgn", "seed=0"])
    assert (config.epochs, config.lr, config.targets, config.seed) == (7, 0.01, ("sgn",), 0)


@pytest.mark.parametrize("assignment, message", [
    ("epoch=3", "unknown setting 'epoch'"),
    ("epochs=three", "expected a int"),
    ("epochs=0", "epochs must be > 0"),
    ("lr=-1e-3", "lr must be > 0"),
    ("seed=-1", "seed must be >= 0"),
    ("seed=4294967296", "seed must be <= 4,294,967,295"),
    ("epochs=9223372036854775808", "epochs=9223372036854775808 is too large"),
    ("targets=", "targets must not be empty"),
    ("targets=cosine", "not one of sinc, sgn"),
    ("epochs", "expects key=value"),
])
def test_bad_settings_are_refused(assignment, message):
    with pytest.raises(UsageError, match=message):
        resolve(part1_1a.PRESETS, "quick", [assignment])


def test_unknown_preset_is_refused():
    with pytest.raises(UsageError, match="unknown preset 'medium'"):
        resolve(part1_1a.PRESETS, "medium")


def test_params_read_like_the_command_line():
    params = to_params(part1_1a.PRESETS["full"])
    assert params["targets"] == "sinc,sgn" and params["epochs"] == "20000"


@dataclass(frozen=True)
class Sweep:
    widths: tuple[int, ...] = setting((8, 16), role=SWEEP)
    grid_points: int = setting(30, role=PRESENTATION)
    epochs: int = 3
    seed: int = setting(0, minimum=0)


def test_a_field_is_part_of_every_model_identity_unless_it_declares_otherwise():
    assert roles(Sweep) == {"widths": SWEEP, "grid_points": PRESENTATION, "epochs": IDENTITY, "seed": IDENTITY}
    assert identity_params(Sweep(epochs=5)) == {"epochs": "5", "seed": "0"}


def test_an_unknown_role_is_refused_where_the_field_is_declared():
    with pytest.raises(ValueError, match="role must be one of identity, sweep, presentation"):
        setting(1, role="cosmetic")


@dataclass(frozen=True)
class Recipe(MnistSplits):
    epochs: int = 80
    lr: float = 3e-4


RECIPES = {"full": Recipe(), "quick": Recipe(epochs=4)}
HARDER_SET = {"fashion-mnist": {"full": Recipe(dataset="fashion-mnist", epochs=150)}}


@pytest.mark.parametrize("assignments, expected", [
    ([], ("mnist", 80, 3e-4)),
    (["dataset=fashion-mnist"], ("fashion-mnist", 150, 3e-4)),  # the set's own preset
    (["dataset=fashion-mnist", "epochs=90", "lr=1e-3"], ("fashion-mnist", 90, 1e-3)),  # the user still wins
    (["epochs=90", "dataset=fashion-mnist"], ("fashion-mnist", 90, 3e-4)),  # in whatever order
])
def test_an_image_set_can_have_its_own_preset(assignments, expected):
    config = resolve(RECIPES, "full", assignments, HARDER_SET)
    assert (config.dataset, config.epochs, config.lr) == expected


def test_an_image_set_without_its_own_preset_takes_mnists():
    config = resolve(RECIPES, "quick", ["dataset=fashion-mnist"], HARDER_SET)
    assert (config.dataset, config.epochs) == ("fashion-mnist", 4)
