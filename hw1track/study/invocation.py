"""One invocation of an experiment: its parent run, provenance, data, threads, and reuse of a finished twin.

Data are loaded before the parent run opens and every input is validated
before that, so a failure leaves nothing in the store.

An invocation is two steps that every executor (`executors`) shares: opening
the parent run (`opened_parent`), and training replicates into it
(`train_replicates`), all of them in this process or one unit per task elsewhere
(`train_unit`).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from hw1track import config as configs
from hw1track.errors import OutOfMemory, UsageError
from hw1track.study import replicate_tables
from hw1track.study.context import RunContext, report
from hw1track.study.discovery import Experiment, experiments_folder, get_experiment
from hw1track.study.replicates import check_seeds, default_seeds
from hw1track.study.units import Unit
from hw1track.tracking import server_retries
from hw1track.tracking.code_version import code_version
from hw1track.tracking.identity import config_hash
from hw1track.tracking.names import (PARAM_SEEDS, TAG_CODE_VERSION, TAG_DATA_MD5, TAG_DATASET, TAG_GIT_COMMIT,
                                     TAG_MNIST_MD5, TAG_REUSE, TAG_RUN_HASH, TAG_SEED, TAG_TORCH_THREADS,
                                     TAG_VERSION_PREFIX)
from hw1track.tracking.orphans import describe, find_orphans, mark_killed
from hw1track.tracking.provenance import git_commit, package_versions
from hw1track.tracking.runs import ParentRun, parent_run
from hw1track.tracking.store import Store, local_database
from hw1track.training import data as mnist_data
from hw1track.training.threads import intra_op_threads


def resolve_device(name: str, here: bool = True) -> torch.device:
    """The device called `name`; with `here`, one this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if here and device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def _parent_tags(experiment: Experiment, config: Any, uses_images: bool) -> dict[str, str]:
    commit = git_commit()
    tags = {TAG_GIT_COMMIT: commit, MLFLOW_GIT_COMMIT: commit.removesuffix("-dirty"), TAG_SEED: config.seed,
            TAG_TORCH_THREADS: torch.get_num_threads()}
    tags.update({f"{TAG_VERSION_PREFIX}{name}": version for name, version in package_versions().items()})
    if uses_images:
        image_set = mnist_data.image_set_of(config)
        tags.update({TAG_DATASET: image_set.name, TAG_DATA_MD5: image_set.checksum()})
        if image_set is mnist_data.MNIST:
            tags[TAG_MNIST_MD5] = image_set.checksum()
    return tags


def run_experiment(experiment: Experiment, preset: str, config: Any, store: Store, device: torch.device,
                   data_dir: str | None = None, threads: int | None = None, reuse: bool = False,
                   seeds: int | None = None, executor: Executor | None = None) -> str:
    """Train everything `experiment` declares under one parent run, `seeds` times; returns the parent's run id.

    `seeds` is the number of replicates of every configuration (the preset's
    default when None, see `replicates.DEFAULT_SEEDS`). `executor` trains them:
    in this process unless told otherwise (`executors`).

    Data are loaded before the parent run opens, so a missing or corrupted image
    set (the config's `dataset`, imported from `data_dir` if given) fails
    without leaving anything in the store. `threads` (else the experiment's
    THREADS, else torch's default) sets torch's intra-op threads for this run only.
    Runs of the experiment left RUNNING by a process that is gone are marked KILLED first.
    A tracking server lost for longer than requests are retried (`server_retries`) ends it with one `ServerLost`.

    With `reuse` (what `hw1track run` does unless --force), an invocation whose
    config, preset and code version already FINISHED returns that parent and
    trains nothing, and every model whose config already FINISHED is reused
    (linked to the new parent) instead of trained again.
    """
    from hw1track.study.executors import InProcess

    seeds = check_seeds(default_seeds(preset) if seeds is None else seeds)
    with server_retries.reported_in_one_line(store.uri):
        return _run_reusing(experiment, preset, config, store, device, data_dir, threads, reuse, seeds,
                            executor or InProcess())


def _run_reusing(experiment: Experiment, preset: str, config: Any, store: Store, device: torch.device,
                 data_dir: str | None, threads: int | None, reuse: bool, seeds: int, executor: Executor) -> str:
    _clear_orphans(experiment.name, store)
    scope = model_scope(preset, config)
    run_hash = config_hash(experiment.name, {**configs.to_params(config), PARAM_SEEDS: seeds}, scope)
    experiment_id = store.experiment_id(experiment.name) if reuse else None
    finished = store.finished_run(experiment_id, TAG_RUN_HASH, run_hash, "parent") if experiment_id else None
    if finished is not None:
        report(experiment.name, f"an identical run already finished (parent run {finished.info.run_id}): "
                                 f"nothing to train; --force trains it again")
        return finished.info.run_id
    threads = threads or experiment.threads or executor.default_threads()
    invocation = Invocation(experiment.name, preset, config, seeds, str(device), _absolute_uri(store.uri), scope,
                            run_hash, reuse, threads, data_dir)
    with intra_op_threads(threads):
        return executor.run(experiment, invocation, store)


@dataclass(frozen=True)
class Invocation:
    """What training the replicates of one invocation needs, in plain values, so that a task elsewhere can do it.

    `tracking_uri` is absolute (see `_absolute_uri`): a task may run in another
    working directory, as Ray's do. `data_dir` is the folder to import the
    config's image set from (None: its `source_env`, else what the data root holds).
    """

    experiment: str
    preset: str
    config: Any
    seeds: int
    device: str
    tracking_uri: str
    scope: Mapping[str, Any]
    run_hash: str
    reuse: bool
    threads: int
    data_dir: str | None

    def load_images(self, root: str | None = None) -> mnist_data.Mnist:
        """The config's image set on the invocation's device, from `root` (None: the default data root)."""
        image_set = mnist_data.image_set_of(self.config)
        return mnist_data.load_images(image_set, Path(root) if root else None, self.data_dir).to(self.device)


class Executor(Protocol):
    """How an invocation's replicates get trained once its parent run is open (see `executors`)."""

    def default_threads(self) -> int:
        """torch's intra-op threads when neither --threads nor the experiment's THREADS says."""

    def run(self, experiment: Experiment, invocation: Invocation, store: Store) -> str:
        """Open the parent (`opened_parent`) and train every replicate into it (`train_replicates`), or set
        that going elsewhere; the parent's run id."""

    def when_done(self, run_id: str, done: Callable[[], None]) -> None:
        """Call `done` once the invocation whose parent is `run_id` has ended well (see `executors`)."""


def _absolute_uri(uri: str) -> str:
    database = local_database(uri)
    return uri if database is None else f"sqlite:///{database.resolve()}"


def model_scope(preset: str, config: Any) -> dict[str, Any]:
    """What every model of this invocation is identified by besides its own params.

    The config's IDENTITY fields are all in it, so a setting that changes
    training changes every model's identity even when a run module does not copy
    it into the model's params; SWEEP and PRESENTATION fields are left out
    (`hw1track.config.ROLES`), so a longer sweep reuses the models it already had.
    """
    identity = {f"config.{key}": value for key, value in configs.identity_params(config).items()}
    return {"preset": preset, "code_version": code_version(experiments_folder()), **identity}


def _clear_orphans(experiment: str, store: Store) -> None:
    orphans = find_orphans(store, experiment)
    mark_killed(store, orphans)
    for run in orphans:
        report(experiment, f"marked KILLED, its process is gone: {describe(run)}")


@contextmanager
def opened_parent(experiment: Experiment, invocation: Invocation, store: Store) -> Iterator[ParentRun]:
    """The invocation's parent run with its params and run_config.json; when the body ends without an
    exception, the tables its replicates logged in parts are assembled (`replicate_tables.merge`) and it
    ends FINISHED, else FAILED or KILLED (`ending`)."""
    device, config, preset, seeds = invocation.device, invocation.config, invocation.preset, invocation.seeds
    run_name = f"{experiment.name}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {**_parent_tags(experiment, config, experiment.uses_mnist),
            TAG_CODE_VERSION: invocation.scope["code_version"], TAG_RUN_HASH: invocation.run_hash,
            TAG_REUSE: str(invocation.reuse).lower()}
    with parent_run(store, experiment.name, preset, run_name, tags, scope=invocation.scope,
                    reuse=invocation.reuse) as parent:
        parent.log_params({**configs.to_params(config), "preset": preset, PARAM_SEEDS: seeds, "device": device})
        parent.log_json({"experiment": experiment.name, "preset": preset, "config": configs.to_dict(config),
                         PARAM_SEEDS: seeds,
                         "device": device, "git_commit": tags[TAG_GIT_COMMIT],
                         "versions": package_versions(), "argv": sys.argv,
                         **_data_record(experiment, config)},
                        "run_config.json")
        yield parent
        replicate_tables.merge(parent)


def _data_record(experiment: Experiment, config: Any) -> dict[str, Any]:
    """What run_config.json says of the data: the image set and its files' MD5s (`mnist_md5` for MNIST, as before)."""
    if not experiment.uses_mnist:
        return {"dataset": None, "mnist_md5": None}
    image_set = mnist_data.image_set_of(config)
    key = "mnist_md5" if image_set is mnist_data.MNIST else "data_md5"
    return {"dataset": image_set.name, key: dict(image_set.md5)}


def train_replicates(experiment: Experiment, config: Any, ctx: RunContext) -> None:
    """The experiment's own code, on the replicates `ctx` holds; a model too large for memory is one line."""
    with _allocation_failures_in_one_line(experiment.name, ctx.device):
        experiment.module.run(config, ctx)


def train_unit(invocation: Invocation, parent_run_id: str, unit: Unit, mnist_root: str | None) -> None:
    """One unit of an invocation whose parent is open elsewhere (a replicate, or one model of it: `units`),
    in a process of its own.

    Everything comes from `invocation` and the absolute paths it was given, not
    from this process's working directory or environment: the store client is
    made again from the URI, the images are loaded from `mnist_root` (imported from
    `invocation.data_dir` if needed) and the children nest under `parent_run_id`.
    """
    experiment = get_experiment(invocation.experiment)
    store = Store(invocation.tracking_uri)
    device = torch.device(invocation.device)
    with server_retries.reported_in_one_line(store.uri), intra_op_threads(invocation.threads):
        data = invocation.load_images(mnist_root) if experiment.uses_mnist else None
        parent = ParentRun.attach(store, parent_run_id, scope=invocation.scope, reuse=invocation.reuse)
        only = None if unit.model is None else frozenset({unit.model})
        train_replicates(experiment, invocation.config,
                         RunContext(parent, device, data, invocation.seeds, replicate_indices=(unit.replicate,),
                                    only_models=only))


@contextmanager
def _allocation_failures_in_one_line(experiment: str, device: torch.device) -> Iterator[None]:
    """A model or batch too large for the device (`--set widths=99999999999`) cannot be refused up front
    without knowing every run module's memory use, so it fails where torch allocates: the runs end
    FAILED, as with any exception, and the user gets the size that was asked for instead of torch's stack."""
    try:
        yield
    except RuntimeError as exc:
        message = str(exc)
        if not isinstance(exc, torch.OutOfMemoryError) and "can't allocate memory" not in message:
            raise
        raise OutOfMemory(f"{experiment}: out of memory on {device} (asked for {_asked_size(message)}); lower "
                          f"the sizes set with --set (widths, batch sizes, train_size) or use a device with more "
                          f"memory; the runs were marked FAILED") from None


def _asked_size(message: str) -> str:
    """The allocation that failed, from torch's message on the CPU (bytes) or on CUDA (already in GiB)."""
    if found := re.search(r"allocate (\d+) bytes", message):
        return f"{int(found.group(1)) / 2**30:,.1f} GiB"
    if found := re.search(r"allocate ([\d.]+ [KMGTP]iB)", message, re.IGNORECASE):
        return found.group(1)
    return "more than it has"
