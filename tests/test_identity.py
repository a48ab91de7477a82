"""A model is reused only when everything that made it is the same: every config field of every experiment, checked.

A child run's identity (tag `hw1track.config_hash`) decides whether a later
invocation reuses it instead of training. A setting that changes training but
not the identity would make `--set` silently hand back the wrong model, so every
field of every experiment's `Config` (found by `discover()`, so a new field is
covered without touching this file) is changed once, the experiment is run
for real at tiny settings into a SQLite store, and the children's hashes read
back are compared with those of an invocation without the change. What must
happen depends on the field's declared role (`hw1track.config.ROLES`):

- IDENTITY: no child keeps its hash, whether or not the run module copies the
  field into the child's params;
- SWEEP: children that exist either way keep their hash, and children come or
  go (a longer sweep trains only what it adds);
- PRESENTATION: the children are the same models: the same hashes, and the same
  metrics logged on them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from mlflow.entities import Run
from test_reliability import TINY

from hw1track import config as configs
from hw1track.study.discovery import discover
from hw1track.study.invocation import run_experiment
from hw1track.tracking.code_version import ENV as CODE_VERSION_ENV
from hw1track.tracking.names import TAG_CONFIG_HASH
from hw1track.tracking.query import StoreReader
from hw1track.tracking.store import Store

EXPERIMENTS = discover()
FIELDS = [(name, field) for name, experiment in EXPERIMENTS.items()
          for field in dataclasses.fields(experiment.module.Config)]
# Each L-BFGS-B solve of the sharpness costs about a second over 109,386 bounds, whatever its iterations:
# one model and one ε make it one solve per invocation.
SMALLER = {"part1_3c_ii": ("batch_sizes=64", "sharpness_epsilons=0.001")}
# Where the generic change (see `_changed`) would not make a sensible config.
CHANGES = {("part1_3a", "widths"): "784,33,10"}  # appending a width would make an 11-class output layer


def _fixed(field: dataclasses.Field) -> bool:
    """A scalar field allowed one value only: no `--set` can change it, so there is nothing to compare."""
    choices = field.metadata.get("choices")
    return choices is not None and len(choices) == 1 and not isinstance(field.default, tuple)


def _base(name: str) -> tuple[str, ...]:
    return (*TINY[name], *SMALLER.get(name, ()))


def _another(value: Any, choices: tuple | None) -> Any:
    if isinstance(value, bool):
        return not value
    if choices:
        return choices[(choices.index(value) + 1) % len(choices)]
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2
    raise NotImplementedError(f"no generic change for {value!r}: add one to CHANGES")


def _changed(name: str, field: dataclasses.Field, value: Any) -> str:
    """A `--set` value for `field` other than `value`: the next choice, +1, half, or a list one longer (or shorter)."""
    if (name, field.name) in CHANGES:
        return CHANGES[name, field.name]
    choices = field.metadata.get("choices")
    if isinstance(value, tuple):
        extra = _another(value[-1], choices)
        value = (*value, extra) if extra not in value else value[:-1]
        return ",".join(map(str, value))
    changed = _another(value, choices)
    return str(changed).lower() if isinstance(changed, bool) else str(changed)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> str:
    """One store for the module, so that each experiment's unchanged invocation is trained once."""
    return f"sqlite:///{tmp_path_factory.mktemp('identity') / 'mlflow.db'}"


@pytest.fixture(scope="module", autouse=True)
def pinned_code_version():
    """Edits to the working tree while the module runs must not change the models' identity between invocations."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CODE_VERSION_ENV, "identity-tests")
        yield


def _invoke(name: str, store_uri: str, *overrides: str) -> dict[str, Run]:
    """One real invocation, as `hw1track run --force` makes it; its children by run name."""
    experiment = EXPERIMENTS[name]
    config = configs.resolve(experiment.presets, "quick", overrides)
    parent_id = run_experiment(experiment, "quick", config, Store(store_uri), torch.device("cpu"), threads=1)
    reader = StoreReader(store_uri)
    children = reader.children(reader.client.get_run(parent_id))
    named = {child.info.run_name: child for child in children}
    assert len(named) == len(children) > 0, f"{name}: children must exist and have distinct names"
    return named


@pytest.fixture(scope="module")
def unchanged(shared_store):
    """The children of each experiment at its base settings, trained once for the whole module."""
    cache: dict[str, dict[str, Run]] = {}

    def children(name: str) -> dict[str, Run]:
        if name not in cache:
            cache[name] = _invoke(name, shared_store, *_base(name))
        return cache[name]

    return children


def _hashes(children: dict[str, Run]) -> dict[str, str]:
    return {name: run.data.tags[TAG_CONFIG_HASH] for name, run in children.items()}


def _logged(reader: StoreReader, run: Run) -> dict[tuple[str, int], float]:
    """Every metric value logged on `run`, by key and step."""
    return {(key, m.step): m.value for key in run.data.metrics
            for m in reader.client.get_metric_history(run.info.run_id, key)}


def test_every_field_gets_a_valid_change_here():
    """Cheap guard for the slow walk below: each field of each experiment has a change its config accepts."""
    for name, field in FIELDS:
        if _fixed(field):
            continue
        experiment = EXPERIMENTS[name]
        base = configs.resolve(experiment.presets, "quick", _base(name))
        changed = configs.resolve(experiment.presets, "quick",
                                  (*_base(name), f"{field.name}={_changed(name, field, getattr(base, field.name))}"))
        assert getattr(changed, field.name) != getattr(base, field.name), (name, field.name)
        assert configs.role(field) in configs.ROLES


@pytest.mark.slow
@pytest.mark.parametrize("name, field", FIELDS, ids=[f"{name}.{field.name}" for name, field in FIELDS])
def test_changing_a_setting_changes_exactly_the_models_its_role_says(name, field, shared_store, unchanged):
    if _fixed(field):
        pytest.skip(f"{name}.{field.name} allows one value only")
    base = configs.resolve(EXPERIMENTS[name].presets, "quick", _base(name))
    before = unchanged(name)
    after = _invoke(name, shared_store, *_base(name), f"{field.name}={_changed(name, field, getattr(base, field.name))}")
    old, new = _hashes(before), _hashes(after)
    role = configs.role(field)

    if role == configs.IDENTITY:
        kept = {child for child, key in new.items() if key in old.values()}
        assert not kept, f"{name}.{field.name} changes training, yet these children kept their identity: {kept}"
    elif role == configs.SWEEP:
        both = old.keys() & new.keys()
        assert both, f"{name}.{field.name}: a changed sweep should keep some of its children"
        assert {child: new[child] for child in both} == {child: old[child] for child in both}, \
            f"{name}.{field.name} is a sweep: the children it did not add or drop must keep their identity"
        assert old.keys() != new.keys(), f"{name}.{field.name} is a sweep, yet the same children exist"
        added = {new[child] for child in new.keys() - old.keys()}
        assert not added & set(old.values()), f"{name}.{field.name}: a child it adds took an existing identity"
    else:
        assert new == old, f"{name}.{field.name} is presentation-only, yet the children's identities changed"
        reader = StoreReader(shared_store)
        for child in old:
            assert _logged(reader, after[child]) == pytest.approx(_logged(reader, before[child])), \
                f"{name}.{field.name} is presentation-only, yet {child} logged something else"
