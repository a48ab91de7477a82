"""The context a run module trains in: its parent run, the device, the data, and how a model becomes a child run.

Everything that is the same for every experiment's models happens here once:
the standard params, training through the epoch driver, logging the final
weights, and reusing a model whose identical config already finished.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hw1track.study import replicate_tables
from hw1track.study.replicates import Replicate, model_name, replicates
from hw1track.tracking.inputs import SplitInputs
from hw1track.tracking.names import METRIC_EPOCHS_TRAINED, METRIC_STOPPED_BY_RULE, PARAM_MODEL
from hw1track.tracking.runs import ParentRun, ReusedRun, TrackedRun
from hw1track.tracking.weights import restore_weights
from hw1track.training import data as mnist_data
from hw1track.training.driver import EpochHook
from hw1track.training.fit import fit
from hw1track.training.full_batch_replicates import fit_full_batch_together, trains_full_batch
from hw1track.training.milestones import LossPlateau
from hw1track.training.mlp_stack import fit_together
from hw1track.training.models import n_params, seeded_model
from hw1track.training.tasks import CLASSIFICATION, Split, Task


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
    """What a run module sees: its parent run, the device, the data, and which replicates to train.

    `replicate_indices` restricts this context to some of the invocation's
    replicates (one, when an executor trains each replicate as its own task);
    None means all `seeds` of them, in this process. `only_models` restricts
    `train_classifiers` to the models so named (one, when an executor trains
    each independent model as its own task, see `units`).
    """

    parent: ParentRun
    device: torch.device
    mnist_data: mnist_data.Mnist | None
    seeds: int = 1
    replicate_indices: tuple[int, ...] | None = None
    only_models: frozenset[str] | None = None

    def __post_init__(self) -> None:
        data = self.mnist_data
        self._inputs = None if data is None else SplitInputs(data.dataset, data.checksum)

    @property
    def replicates(self) -> tuple[Replicate, ...]:
        """The replicates to train here: a run module trains each of its configurations once per replicate."""
        if self.replicate_indices is None:
            return replicates(self.seeds)
        return tuple(Replicate(index) for index in self.replicate_indices)

    def log_replicate_table(self, table: str, frame: Any) -> None:
        """A parent table with one block of rows per replicate (column `replicate`), such as a curve per seed.

        Each replicate's rows are logged as a part of their own, so replicates
        trained in separate processes never overwrite each other; the parent's
        `table` is assembled from the parts when the invocation ends
        (`replicate_tables.merge`), whichever way the replicates were trained.
        """
        replicate_tables.log_parts(self.parent, table, frame)

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
        report(self.parent.experiment, message)

    def _trains_on_images(self, train: Split) -> bool:
        """Whether `train` holds this invocation's images: part1_2b also fits a 1-D function beside them."""
        return self.mnist_data is not None and tuple(train[0].shape[1:]) == tuple(self.mnist_data.train_x.shape[1:])

    def _log_inputs(self, child: TrackedRun, train: Split, eval_splits: Mapping[str, Split]) -> None:
        """The splits a child trains and is evaluated on, as MLflow dataset inputs (models of images only)."""
        if self._inputs is not None and self._trains_on_images(train):
            child.log_inputs(self._inputs.inputs({"train": train, **eval_splits}))

    def _data_params(self, train: Split) -> dict[str, str]:
        """`dataset` on every model of images, so that the UI can compare the two sets in one table."""
        return {"dataset": self.mnist_data.dataset} if self._trains_on_images(train) else {}

    def train_classifiers(self, models: Mapping[str, tuple[Callable[[], nn.Module], Mapping[str, Any]]],
                          cfg: Any, stop_rule: Callable[[], LossPlateau] | None = None) -> None:
        """Train named MNIST classifiers one after another, once per replicate, with the config's data and recipe.

        Model number m is seeded `cfg.seed + m` (in replicate 0), so the sweep's
        models differ in their initialisation as well as in what the experiment
        varies (`params`). Each replicate trains the whole sweep before the next
        starts, so an interrupted run leaves complete replicates behind. With a
        `stop_rule` (a fresh rule per model), `cfg.epochs` is a cap, and each
        child logs the epoch it stopped at and whether the rule or the cap stopped it.
        """
        train, test = self.mnist_splits(cfg.train_size, cfg.test_size, cfg.seed)
        for replicate in self.replicates:
            for m, (name, (factory, params)) in enumerate(models.items()):
                if self.only_models is not None and name not in self.only_models:
                    continue
                seed = replicate.seed(cfg.seed + m)
                rule = stop_rule() if stop_rule is not None else None
                self.train_model(replicate.name(name), seeded_model(factory, seed, self.device), seed=seed,
                                 train=train, eval_splits={"train": train, "test": test}, task=CLASSIFICATION,
                                 epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                 params={**params, **replicate.params}, stop_when=rule,
                                 log_artifacts=None if rule is None else
                                 lambda child, _model, rule=rule: _log_stop(child, rule, cfg.epochs))

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
        standard = {**_standard_params(name, model, seed, train, eval_splits, epochs, batch_size, lr),
                    **self._data_params(train)}
        started = time.perf_counter()
        with self.parent.child(name, {**standard, **params}) as child:
            if isinstance(child, ReusedRun):
                final = _restore_weights(model, child, eval_splits)
            else:
                self._log_inputs(child, train, eval_splits)
                final = fit(model, train, task=task, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                            eval_splits=eval_splits, sink=child, desc=name, **fit_options)
                _log_trained(child, model, log_artifacts)
        self._report_child(name, child, final, f"P={standard['n_params']}, {_budget(epochs, fit_options)} in "
                                               f"{time.perf_counter() - started:.1f}s")
        return final

    def train_together(self, members: Mapping[str, Member], *, train: Split, eval_splits: Mapping[str, Split],
                       task: Task, epochs: int, batch_size: int, lr: float, per_replicate: tuple[str, ...] = (),
                       **fit_options: Any) -> dict[str, dict[str, float]]:
        """Train same-shape `models.mlp` nets side by side, each as its own child run (`mlp_stack.fit_together`).

        Each member is logged, reused and restored exactly as `train_model`
        would do it; only the members that are not reused are trained, together.
        A lone member trains by `fit`, as `train_model` would train it, so one
        replicate of a model gives the numbers it gave before replicates existed;
        full-batch MSE fits train as one hand-written stack
        (`full_batch_replicates`), all others as an `mlp_stack.MlpStack`.
        `fit_options` are the driver's, as for `train_model` (stop_when, anneal_lr,
        log_iterations); `per_replicate` names params that only number samples of
        one configuration (see `ParentRun.child`).
        """
        finals: dict[str, dict[str, float]] = {}
        trained: dict[str, TrackedRun] = {}
        started = time.perf_counter()
        with ExitStack() as children:
            for name, member in members.items():
                standard = {**_standard_params(name, member.model, member.seed, train, eval_splits, epochs, batch_size,
                                               lr), **self._data_params(train)}
                child = children.enter_context(self.parent.child(name, {**standard, **member.params}, per_replicate))
                if isinstance(child, ReusedRun):
                    finals[name] = _restore_weights(member.model, child, eval_splits)
                    self._report_child(name, child, finals[name], "")
                else:
                    self._log_inputs(child, train, eval_splits)
                    trained[name] = child
            if len(trained) == 1:
                ((name, child),) = trained.items()
                member = members[name]
                finals[name] = fit(member.model, train, task=task, epochs=epochs, batch_size=batch_size, lr=lr,
                                   seed=member.seed, eval_splits=eval_splits, sink=child, on_epoch=member.on_epoch,
                                   desc=name, **fit_options)
                _log_trained(child, member.model, member.log_artifacts)
            elif trained:
                chosen = [members[name] for name in trained]
                # full-batch MSE fits (part1_1a, part1_2b's sinc net) train as one hand-written stack
                full_batch = trains_full_batch([m.model for m in chosen], train, task, batch_size)
                stack_fitter = fit_full_batch_together if full_batch else fit_together
                results = stack_fitter([m.model for m in chosen], train, task=task, epochs=epochs,
                                       batch_size=batch_size, lr=lr, seeds=[m.seed for m in chosen],
                                       eval_splits=eval_splits, sinks=list(trained.values()),
                                       on_epoch=[m.on_epoch for m in chosen], desc=f"{len(chosen)} nets together",
                                       **fit_options)
                for (name, child), member, final in zip(trained.items(), chosen, results):
                    _log_trained(child, member.model, member.log_artifacts)
                    finals[name] = final
        took = f"{epochs} epochs, {len(trained)} nets together in {time.perf_counter() - started:.1f}s"
        for name, child in trained.items():
            self._report_child(name, child, finals[name], f"P={n_params(members[name].model)}, {took}")
        return {name: finals[name] for name in members}

    def _report_child(self, name: str, child: TrackedRun | ReusedRun, final: Mapping[str, float], how: str) -> None:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in final.items())
        if isinstance(child, ReusedRun):
            self.report(f"{name}: reused finished run {child.run_id} (same config, preset and code version), {shown}")
        else:
            self.report(f"{name}: {how}, {shown}")


def _budget(epochs: int, fit_options: Mapping[str, Any]) -> str:
    rule = fit_options.get("stop_when")
    stopped = rule.stop_epoch() if isinstance(rule, LossPlateau) else None
    if stopped is not None:
        return f"{stopped} of up to {epochs} epochs (levelled off)"
    return f"up to {epochs} epochs" if rule is not None else f"{epochs} epochs"


def _log_stop(child: TrackedRun, rule: LossPlateau, cap: int) -> None:
    stopped = rule.stop_epoch()
    epoch = cap if stopped is None else stopped
    child.log_metrics({METRIC_EPOCHS_TRAINED: epoch, METRIC_STOPPED_BY_RULE: float(stopped is not None)}, step=epoch)


def _standard_params(name: str, model: nn.Module, seed: int, train: Split, eval_splits: Mapping[str, Split],
                     epochs: int, batch_size: int, lr: float) -> dict[str, Any]:
    """The params every child run has, whatever the experiment varies."""
    return {PARAM_MODEL: model_name(name), "n_params": n_params(model), "seed": seed, "lr": lr,
            "batch_size": min(batch_size, len(train[0])), "epochs": epochs, "n_train": len(train[0]),
            # evaluation sets change the logged metrics, so they are part of the model's identity
            **{f"n_{split}": len(data[0]) for split, data in eval_splits.items() if split != "train"}}


def _log_trained(child: TrackedRun, model: nn.Module,
                 log_artifacts: Callable[[TrackedRun, nn.Module], None] | None) -> None:
    child.log_state_dict(model)
    if log_artifacts:
        log_artifacts(child, model)


def report(experiment: str, message: str) -> None:
    """A progress line on stderr, prefixed by the experiment."""
    print(f"[{experiment}] {message}", file=sys.stderr, flush=True)


def _restore_weights(model: nn.Module, reused: ReusedRun, eval_splits: Mapping[str, Split]) -> dict[str, float]:
    """Load a reused run's final weights into `model`; returns its final metrics, as training would."""
    restore_weights(model, reused.client, reused.run_id)
    return {key: value for key, value in reused.run.data.metrics.items() if key.split("_")[0] in eval_splits}
