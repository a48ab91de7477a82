"""When two trained models are the same model, and which run stands for it.

A child run is identified by a hash of its recipe and scope (experiment,
preset, code version, and every config field that can change a model; see
`hw1track.config` for the fields that declare otherwise). With reuse on, a
parent whose child config already FINISHED somewhere in the experiment links
that run with a tag `hw1track.reused.<hash>` instead of training it again;
readers follow those links (`reused_child_ids`) and keep one finished run per
hash (`newest_per_config`), so an analysis sees each model exactly once however often it was trained.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from mlflow.entities import Run

from hw1track.tracking.names import PARAM_REPLICATE, PARAM_SEED, TAG_CONFIG_HASH, TAG_REUSED_PREFIX

# What differs between the replicates of one configuration, and only between them.
PER_REPLICATE_PARAMS = (PARAM_REPLICATE, PARAM_SEED)


def config_hash(experiment: str, params: Mapping[str, Any], scope: Mapping[str, Any] | None = None) -> str:
    """Identity of a trained model's recipe: equal hashes mean interchangeable runs.

    `scope` is what the params do not show but the result depends on: preset,
    code version and the invocation's identity settings (`hw1track.config.identity_params`;
    the base seed among them, which picks the data subsets).
    """
    identity: dict[str, Any] = {"experiment": experiment, "params": {k: str(v) for k, v in params.items()}}
    if scope:
        identity["scope"] = {k: str(v) for k, v in scope.items()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def group_hash(experiment: str, params: Mapping[str, Any], scope: Mapping[str, Any] | None = None,
               per_replicate: Collection[str] = ()) -> str:
    """Identity of a configuration whatever its seed: equal for all its replicates, different across configurations.

    `per_replicate` names params beyond the seed and replicate index that only
    number the samples of one configuration (part1_2c's `training`: its 100
    trainings are 100 seeds of one net), so they are left out as well.
    """
    left_out = {*PER_REPLICATE_PARAMS, *per_replicate}
    return config_hash(experiment, {k: v for k, v in params.items() if k not in left_out}, scope)


def reused_child_ids(parent: Run) -> list[str]:
    """Ids of the finished runs of other invocations that `parent` reused instead of training them again."""
    return [value for key, value in parent.data.tags.items() if key.startswith(TAG_REUSED_PREFIX)]


def newest_per_config(runs: Sequence[Run]) -> list[Run]:
    """`runs` without older FINISHED duplicates: one finished run per config hash, the newest; order kept."""
    newest: dict[str, Run] = {}
    for run in runs:
        key = run.data.tags.get(TAG_CONFIG_HASH)
        if key and run.info.status == "FINISHED":
            if key not in newest or run.info.start_time > newest[key].info.start_time:
                newest[key] = run
    return [run for run in runs
            if run.info.status != "FINISHED" or newest.get(run.data.tags.get(TAG_CONFIG_HASH), run) is run]
