"""Where an invocation's replicates are trained: in this process (the default), or as Ray tasks (`ray_executor`).

Both open the parent run and end it the same way (`invocation.opened_parent`)
and run the same run module code (`invocation.train_replicates`); they differ
in where that code runs, how much of an invocation one call of it holds, and
when: in this process each invocation is trained before `run` returns, on a
cluster every invocation of a study is under way at once, and `when_done`
says when one has ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from hw1track.study.context import RunContext
from hw1track.study.discovery import Experiment
from hw1track.study.invocation import Executor, Invocation, opened_parent, train_replicates
from hw1track.tracking.store import Store

LOCAL = "local"
RAY = "ray"
EXECUTORS = (LOCAL, RAY)


class InProcess:
    """Every replicate in this process, in one call of the run module, so that replicates can train as one stack."""

    def default_threads(self) -> int:
        return torch.get_num_threads()

    def run(self, experiment: Experiment, invocation: Invocation, store: Store) -> str:
        device = torch.device(invocation.device)
        data = invocation.load_images() if experiment.uses_mnist else None
        with opened_parent(experiment, invocation, store) as parent:
            train_replicates(experiment, invocation.config, RunContext(parent, device, data, invocation.seeds))
            return parent.run_id

    def when_done(self, run_id: str, done: Callable[[], None]) -> None:
        done()  # `run` returned only once everything was trained


@contextmanager
def started(name: str, ray_address: str | None, device: torch.device, experiments: int) -> Iterator[Executor]:
    """The executor called `name` (one of EXECUTORS), ready for the study's `experiments` invocations; on
    leaving, every invocation it was given has ended.

    Ray is imported only here, only when asked for (see `ray_executor`).
    """
    if name == LOCAL:
        yield InProcess()
        return
    from hw1track.study import ray_executor

    with ray_executor.connected(ray_executor.cluster_address(ray_address), device, experiments) as executor:
        yield executor
