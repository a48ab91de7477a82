"""Experiments as plug-ins: discovery of `runs/`, and the context a run module trains in.

A run module declares `Config`, `PRESETS`, `DATA` ("mnist" or "synthetic") and
`run(config, ctx)`; its first docstring line is its summary. Everything that is
the same for all experiments (opening the parent run, provenance, data,
device, training one model as a child run, reusing models that already
finished) happens here, once.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import nn

from hw1track import config as configs
from hw1track import data as mnist_data
from hw1track.code_version import code_version
from hw1track.errors import UsageError
from hw1track.models import n_params
from hw1track.orphans import describe, find_orphans, mark_killed
from hw1track.threads import intra_op_threads
from hw1track.provenance import git_commit, package_versions
from hw1track.tracking import (MLFLOW_GIT_COMMIT, TAG_CODE_VERSION, TAG_GIT_COMMIT, TAG_MNIST_MD5, TAG_RUN_HASH,
                               ParentRun, ReusedRun, Store, TrackedRun, config_hash, parent_run, restore_weights)
from hw1track.train import CLASSIFICATION, EpochHook, Split, Task, fit, seeded_model
from hw1track.train_together import fit_together


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str
    module: ModuleType

    @property
    def presets(self) -> Mapping[str, Any]:
        return self.module.PRESETS

    @property
    def threads(self) -> int | None:
        """The intra-op thread count the experiment runs best with, if it declares one (THREADS)."""
        return getattr(self.module, "THREADS", None)

    @property
    def uses_mnist(self) -> bool:
        return getattr(self.module, "DATA", "synthetic") == "mnist"

    def analysis(self) -> ModuleType:
        return importlib.import_module(f"analysis.{self.name}")


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


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


@dataclass(frozen=True)
class Member:
    """One net of a group trained together: its model, seed, varied params and per-model hooks."""

    model: nn.Module
    seed: int
    params: Mapping[str, Any]
    on_epoch: EpochHook | None = None
    log_artifacts: Callable[[TrackedRun, nn.Module], None] | None = None


@dataclass
class RunContext:
    """What a run module sees: its parent run, the device, and the data."""

    parent: ParentRun
    device: torch.device
    mnist_data: mnist_data.Mnist | None

    def mnist(self) -> mnist_data.Mnist:
        if self.mnist_data is None:
            raise RuntimeError("this experiment did not declare DATA = 'mnist'")
        return self.mnist_data

    def mnist_splits(self, train_size: int, test_size: int, seed: int) -> tuple[Split, Split]:
        """Seeded train and test subsets (the whole sets when the sizes cover them)."""
        mnist = self.mnist()
        return (mnist_data.subset(mnist.train_x, mnist.train_y, train_size, seed),
                mnist_data.subset(mnist.test_x, mnist.test_y, test_size, seed))

    def report(self, message: str) -> None:
        _report(self.parent.experiment, message)

    def train_classifiers(self, models: Mapping[str, tuple[Callable[[], nn.Module], Mapping[str, Any]]],
                          cfg: Any) -> None:
        """Train named MNIST classifiers one after another with the config's data and recipe.

        Model number m is seeded `cfg.seed + m`, so the sweep's models differ in
        their initialisation as well as in what the experiment varies (`params`).
        """
        train, test = self.mnist_splits(cfg.train_size, cfg.test_size, cfg.seed)
        for m, (name, (factory, params)) in enumerate(models.items()):
            seed = cfg.seed + m
            self.train_model(name, seeded_model(factory, seed, self.device), seed=seed, train=train,
                             eval_splits={"train": train, "test": test}, task=CLASSIFICATION, epochs=cfg.epochs,
                             batch_size=cfg.batch_size, lr=cfg.lr, params=params)

    def train_model(self, name: str, model: nn.Module, *, seed: int, train: Split, eval_splits: Mapping[str, Split],
                    task: Task, epochs: int, batch_size: int, lr: float, params: Mapping[str, Any],
                    log_artifacts: Callable[[TrackedRun, nn.Module], None] | None = None,
                    **fit_options: Any) -> dict[str, float]:
        """Train one model as a child run: standard params, per-epoch metrics, final weights.

        `params` adds what the experiment varies (target, width, ...); `log_artifacts`
        stores anything else the analysis needs once training is done. When the
        parent reuses a finished run of the same config instead, nothing is
        trained or logged: `model` gets that run's final weights, so code that
        uses the trained model afterwards (interpolation, say) carries on.
        """
        standard = _standard_params(name, model, seed, train, eval_splits, epochs, batch_size, lr)
        started = time.perf_counter()
        with self.parent.child(name, {**standard, **params}) as child:
            if isinstance(child, ReusedRun):
                final = _restore_weights(model, child, eval_splits)
            else:
                final = fit(model, train, task=task, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                            eval_splits=eval_splits, sink=child, desc=name, **fit_options)
                _log_trained(child, model, log_artifacts)
        budget = f"up to {epochs}" if fit_options.get("stop_when") else str(epochs)
        self._report_child(name, child, final,
                           f"P={standard['n_params']}, {budget} epochs in {time.perf_counter() - started:.1f}s")
        return final

    def train_together(self, members: Mapping[str, Member], *, train: Split, eval_splits: Mapping[str, Split],
                       task: Task, epochs: int, batch_size: int, lr: float) -> dict[str, dict[str, float]]:
        """Train same-shape `models.mlp` nets side by side, each as its own child run (`hw1track.train_together`).

        Each member is logged, reused and restored exactly as `train_model`
        would do it; only the members that are not reused are trained, together.
        """
        finals: dict[str, dict[str, float]] = {}
        trained: dict[str, TrackedRun] = {}
        started = time.perf_counter()
        with ExitStack() as children:
            for name, member in members.items():
                standard = _standard_params(name, member.model, member.seed, train, eval_splits, epochs, batch_size, lr)
                child = children.enter_context(self.parent.child(name, {**standard, **member.params}))
                if isinstance(child, ReusedRun):
                    finals[name] = _restore_weights(member.model, child, eval_splits)
                    self._report_child(name, child, finals[name], "")
                else:
                    trained[name] = child
            if trained:
                chosen = [members[name] for name in trained]
                results = fit_together([m.model for m in chosen], train, task=task, epochs=epochs,
                                       batch_size=batch_size, lr=lr, seeds=[m.seed for m in chosen],
                                       eval_splits=eval_splits, sinks=list(trained.values()),
                                       on_epoch=[m.on_epoch for m in chosen], desc=f"{len(chosen)} nets together")
                for (name, child), member, final in zip(trained.items(), chosen, results):
                    _log_trained(child, member.model, member.log_artifacts)
                    finals[name] = final
        took = f"{epochs} epochs, {len(trained)} nets together in {time.perf_counter() - started:.1f}s"
        for name, child in trained.items():
            self._report_child(name, child, finals[name], f"P={n_params(members[name].model)}, {took}")
        return {name: finals[name] for name in members}

    def _report_child(self, name: str, child: TrackedRun, final: Mapping[str, float], how: str) -> None:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in final.items())
        if isinstance(child, ReusedRun):
            self.report(f"{name}: reused finished run {child.run_id} (same config, preset and code version), {shown}")
        else:
            self.report(f"{name}: {how}, {shown}")


def _standard_params(name: str, model: nn.Module, seed: int, train: Split, eval_splits: Mapping[str, Split],
                     epochs: int, batch_size: int, lr: float) -> dict[str, Any]:
    """The params every child run has, whatever the experiment varies."""
    return {"model": name, "n_params": n_params(model), "seed": seed, "lr": lr,
            "batch_size": min(batch_size, len(train[0])), "epochs": epochs, "n_train": len(train[0]),
            # evaluation sets change the logged metrics, so they are part of the model's identity
            **{f"n_{split}": len(data[0]) for split, data in eval_splits.items() if split != "train"}}


def _log_trained(child: TrackedRun, model: nn.Module,
                 log_artifacts: Callable[[TrackedRun, nn.Module], None] | None) -> None:
    child.log_state_dict(model)
    if log_artifacts:
        log_artifacts(child, model)


def _report(experiment: str, message: str) -> None:
    print(f"[{experiment}] {message}", file=sys.stderr, flush=True)


def _restore_weights(model: nn.Module, reused: ReusedRun, eval_splits: Mapping[str, Split]) -> dict[str, float]:
    """Load a reused run's final weights into `model`; returns its final metrics, as training would."""
    restore_weights(model, reused.client, reused.run_id)
    return {key: value for key, value in reused.run.data.metrics.items() if key.split("_")[0] in eval_splits}


def _parent_tags(experiment: Experiment, config: Any, uses_mnist: bool) -> dict[str, str]:
    commit = git_commit()
    tags = {TAG_GIT_COMMIT: commit, MLFLOW_GIT_COMMIT: commit.removesuffix("-dirty"), "hw1track.seed": config.seed,
            # float reductions are split per thread: the last digits depend on the thread count
            "hw1track.torch_threads": torch.get_num_threads()}
    tags.update({f"hw1track.version.{name}": version for name, version in package_versions().items()})
    if uses_mnist:
        tags[TAG_MNIST_MD5] = mnist_data.dataset_checksum()
    return tags


def run_experiment(experiment: Experiment, preset: str, config: Any, store: Store, device: torch.device,
                   mnist_dir: str | None = None, threads: int | None = None, reuse: bool = False) -> str:
    """Train everything `experiment` declares under one parent run; returns the parent's run id.

    Data are loaded before the parent run opens, so a missing or corrupted MNIST
    fails without leaving anything in the store. `threads` (else the experiment's
    THREADS, else torch's default) sets torch's intra-op threads for this run only.
    Runs of the experiment left RUNNING by a process that is gone are marked KILLED first.

    With `reuse` (what `hw1track run` does unless --force), an invocation whose
    config, preset and code version already FINISHED returns that parent and
    trains nothing, and every model whose config already FINISHED is reused
    (linked to the new parent) instead of trained again.
    """
    _clear_orphans(experiment.name, store)
    scope = {"preset": preset, "code_version": code_version(), "seed": getattr(config, "seed", None)}
    run_hash = config_hash(experiment.name, configs.to_params(config), scope)
    experiment_id = store.experiment_id(experiment.name) if reuse else None
    finished = store.finished_run(experiment_id, TAG_RUN_HASH, run_hash, "parent") if experiment_id else None
    if finished is not None:
        _report(experiment.name, f"an identical run already finished (parent run {finished.info.run_id}): "
                                 f"nothing to train; --force trains it again")
        return finished.info.run_id
    with intra_op_threads(threads or experiment.threads or torch.get_num_threads()):
        return _run_in_parent(experiment, preset, config, store, device, mnist_dir, scope, run_hash, reuse)


def _clear_orphans(experiment: str, store: Store) -> None:
    orphans = find_orphans(store, experiment)
    mark_killed(store, orphans)
    for run in orphans:
        _report(experiment, f"marked KILLED, its process is gone: {describe(run)}")


def _run_in_parent(experiment: Experiment, preset: str, config: Any, store: Store, device: torch.device,
                   mnist_dir: str | None, scope: Mapping[str, Any], run_hash: str, reuse: bool) -> str:
    data = mnist_data.load_mnist(source=mnist_dir).to(device) if experiment.uses_mnist else None
    run_name = f"{experiment.name}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {**_parent_tags(experiment, config, experiment.uses_mnist), TAG_CODE_VERSION: scope["code_version"],
            TAG_RUN_HASH: run_hash, "hw1track.reuse": str(reuse).lower()}
    with parent_run(store, experiment.name, preset, run_name, tags, scope=scope, reuse=reuse) as parent:
        parent.log_params({**configs.to_params(config), "preset": preset, "device": str(device)})
        parent.log_json({"experiment": experiment.name, "preset": preset, "config": configs.to_dict(config),
                         "device": str(device), "git_commit": tags[TAG_GIT_COMMIT],
                         "versions": package_versions(), "argv": sys.argv,
                         "mnist_md5": dict(mnist_data.MNIST_MD5) if data is not None else None},
                        "run_config.json")
        experiment.module.run(config, RunContext(parent, device, data))
        return parent.run_id
