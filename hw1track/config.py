"""Experiment settings: a frozen dataclass per experiment, named presets, and
`--set key=value` overrides parsed by each field's declared type.

Parsing and validating everything before a run starts is what lets a typo fail
with one line and leave the tracking store untouched. Each field also has a
role in the identity of the models (IDENTITY unless it declares SWEEP or
PRESENTATION), so that reuse never hands back a model trained with other settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from hw1track.errors import UsageError

# What a field is to the models an invocation trains (its `role`).
# A model is identified by its own params plus every IDENTITY field of the config
# (see `identity_params`), so a run module cannot forget to copy a setting that
# changes training into its children's params: a field is identity unless it
# says otherwise.
IDENTITY = "identity"
# Decides which models exist, one per value (widths, batch sizes, trainings);
# each model carries its own value in its params, so that extending a sweep
# reuses the models it already had instead of training them all again.
SWEEP = "sweep"
# Changes only what the parent computes from the trained models (a plot's grid),
# never a model nor anything logged on one.
PRESENTATION = "presentation"
ROLES = (IDENTITY, SWEEP, PRESENTATION)

# The largest integer a setting may hold: what a tensor size, a loop count or an
# MLflow metric step can take (int64). Larger values would pass parsing and fail
# inside torch after the runs were created.
MAX_INT = sys.maxsize
# Seeds stay within 32 bits, the range every generator takes, so that the
# offsets added per model and per replicate (see `study.replicates`) never
# overflow the 64-bit seed of a torch generator.
MAX_SEED = 2**32 - 1
# The image sets an MNIST-format experiment can train on, as `--dataset` names them; the loaders live in
# `hw1track.training.data` (IMAGE_SETS), which this module does not import: it needs no torch.
IMAGE_SET_NAMES = ("mnist", "fashion-mnist")


def setting(default: Any, *, minimum: float | None = None, maximum: float | None = None,
            choices: Sequence[Any] | None = None, allow_any: bool = False, role: str = IDENTITY) -> Any:
    """A config field with its bounds and its role (IDENTITY, SWEEP or PRESENTATION).

    Numbers default to "strictly positive" because almost every knob here is a
    count, a size or a rate; `minimum` makes the bound inclusive instead (seeds
    may be 0) and `allow_any` lifts it (interpolation coefficients). Integers
    are at most `MAX_INT` whatever `maximum` says.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    metadata = {"minimum": minimum, "maximum": maximum, "choices": tuple(choices) if choices else None,
                "allow_any": allow_any, "role": role}
    return dataclasses.field(default=default, metadata=metadata)


def seed_setting(default: int = 0) -> Any:
    """A seed: from 0 to `MAX_SEED`."""
    return setting(default, minimum=0, maximum=MAX_SEED)


def role(field: dataclasses.Field) -> str:
    """A field's role; one declared without `setting` is IDENTITY, so a forgotten declaration retrains, never reuses."""
    return field.metadata.get("role", IDENTITY)


def roles(config: Any) -> dict[str, str]:
    """Every field of `config` (an instance or the class) with its role."""
    return {field.name: role(field) for field in dataclasses.fields(config)}


@dataclasses.dataclass(frozen=True)
class MnistSplits:
    """What every MNIST experiment's config starts with: how much of each split it uses, and its seed.

    An experiment's `Config(MnistSplits)` adds only what differs; sizes cover the
    whole sets by default, and `quick` presets shrink them.
    """

    train_size: int = setting(60_000, minimum=1)
    test_size: int = setting(10_000, minimum=1)
    seed: int = seed_setting()
    # which image set the models train and are tested on (`hw1track.training.data.IMAGE_SETS`)
    dataset: str = setting("mnist", choices=IMAGE_SET_NAMES)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_scalar(text: str, kind: type) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    return text.strip()


def parse_value(text: str, annotation: Any) -> Any:
    """Parse `text` as `annotation`: int, float, str, bool or tuple[T, ...] (comma separated)."""
    if typing.get_origin(annotation) is tuple:
        (item_type, *_rest) = typing.get_args(annotation)
        items = [part for part in text.split(",") if part.strip()]
        return tuple(_parse_scalar(part, item_type) for part in items)
    return _parse_scalar(text, annotation)


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        return f"a comma-separated list of {typing.get_args(annotation)[0].__name__}"
    return f"a {annotation.__name__}"


def validate(config: Any) -> None:
    """Reject values no experiment could run with (non-positive sizes, empty lists, unknown choices, nan)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        meta = field.metadata
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(value, tuple) and not value:
            raise UsageError(f"{field.name} must not be empty")
        for item in values:
            choices = meta.get("choices")
            if choices and item not in choices:
                raise UsageError(f"{field.name}={item!r} is not one of {', '.join(map(str, choices))}")
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if not math.isfinite(item):
                raise UsageError(f"{field.name} must be a finite number, got {item}")
            if isinstance(item, int) and abs(item) > MAX_INT:
                raise UsageError(f"{field.name}={item} is too large (at most {MAX_INT:,}, a 64-bit integer)")
            maximum = meta.get("maximum")
            if maximum is not None and item > maximum:
                raise UsageError(f"{field.name} must be <= {maximum:,}, got {item:,}")
            if meta.get("allow_any"):
                continue
            minimum = meta.get("minimum")
            if minimum is None and item <= 0:
                raise UsageError(f"{field.name} must be > 0, got {item}")
            if minimum is not None and item < minimum:
                raise UsageError(f"{field.name} must be >= {minimum}, got {item}")


def apply_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """Return `config` with each `key=value` applied, parsed by the field's type."""
    types = _field_types(type(config))
    changes: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got {assignment!r}")
        if key not in types:
            known = ", ".join(sorted(types))
            raise UsageError(f"unknown setting {key!r} (known: {known})")
        try:
            changes[key] = parse_value(raw, types[key])
        except ValueError:
            raise UsageError(f"{key}={raw!r}: expected {_describe(types[key])}") from None
    return dataclasses.replace(config, **changes)


def resolve(presets: Mapping[str, Any], preset: str, assignments: Sequence[str] = (),
            dataset_presets: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """The validated config of `preset` with the command line's overrides applied.

    `dataset_presets` ({dataset: {preset: config}}) holds the presets an image set
    needs of its own, where a recipe tuned on MNIST does not do its job on it;
    the overrides, the dataset among them, apply on top of those too.
    """
    if preset not in presets:
        raise UsageError(f"unknown preset {preset!r} (known: {', '.join(presets)})")
    config = apply_overrides(presets[preset], assignments)
    own = (dataset_presets or {}).get(getattr(config, "dataset", None), {}).get(preset)
    if own is not None:
        config = apply_overrides(own, assignments)
    validate(config)
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-ready values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def to_params(config: Any) -> dict[str, str]:
    """Flat string params for MLflow; lists are comma-joined so they read as typed on the command line."""
    params = {}
    for key, value in dataclasses.asdict(config).items():
        params[key] = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return params


def identity_params(config: Any) -> dict[str, str]:
    """The settings that are part of every model's identity: all but SWEEP and PRESENTATION fields, as params."""
    identity = roles(config)
    return {key: value for key, value in to_params(config).items() if identity[key] == IDENTITY}
