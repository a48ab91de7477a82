"""A study on a Ray cluster: one Ray task per unit of work, every task logging to one tracking store.

A unit is one (experiment, replicate), or one model of it where the
experiment's models are independent (`units`): part1_3b's eleven widths times
five seeds are 55 tasks. The command that starts the study is the driver: for
each experiment it validates, clears orphans and checks for a finished twin as
in-process (`invocation`), opens the parent run and submits its tasks, handing
each the parent's run id, the absolute tracking URI and the absolute MNIST
paths (a task's working directory is Ray's, not the driver's). With every
experiment's tasks on the cluster at once, it waits, and ends each parent
FINISHED once its last task has ended, if every one of them succeeded. A task
attaches to its parent and runs the experiment's own code on its one unit
(`invocation.train_unit`).

Ray is optional (`pip install 'hw1track[ray]'`) and imported only here, only
when asked for. Everything that can be refused is refused in seconds with one
line, before anything is written: Ray missing, a cluster that does not answer,
and a local SQLite store that the nodes of a remote cluster could not reach.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from hw1track.errors import Hw1Error, UsageError
from hw1track.study.discovery import Experiment
from hw1track.study.invocation import Invocation, opened_parent, train_unit
from hw1track.study.progress import StudyProgress
from hw1track.study.units import Unit, units
from hw1track.tracking.orphans import earlier_attempts, mark_killed
from hw1track.tracking.store import Store, local_database
from hw1track.training import data as mnist_data

INSTALL = "--executor ray needs Ray: pip install 'hw1track[ray]'"
PROBE_TIMEOUT_SECONDS = 5  # a cluster whose head does not accept a connection within this is unreachable
LOCAL = "local"  # Ray's word for a cluster of this machine, started for this command and stopped after it
ON_THIS_MACHINE = {None, "", LOCAL, "auto"}  # "auto": the cluster `ray start` last started here (`_auto_address`)
DEFAULT_PORTS = {"ray": 10001, "": 6379}  # Ray client, and the head's GCS
WAIT_SECONDS = 1.0  # how often the progress line can change while nothing ends
CANCEL_GRACE_SECONDS = 15.0  # for cancelled tasks to end their runs KILLED
# A task's own stages (see `_unit_task`), so the driver can tell running from queued.
STARTED, TRAINED = "started", "trained"
# Settings the tasks must see as the driver does (outage patience, MLflow's request settings, code version).
FORWARDED_ENV_PREFIXES = ("HW1TRACK_", "MLFLOW_")


class ClusterUnreachable(Hw1Error):
    """No Ray cluster answers at the address given."""


class TaskFailed(Hw1Error):
    """A unit's task raised, or its worker died; its parent run ended FAILED."""


def cluster_address(given: str | None) -> str:
    """The address Ray will use: --ray-address, else $RAY_ADDRESS, else a cluster of this machine for this command.

    Not Ray's own default, which connects to the cluster last started on this
    machine if its address file says so, and waits for minutes when that
    cluster is gone; `--ray-address auto` asks for it explicitly.
    """
    return given or os.environ.get("RAY_ADDRESS") or LOCAL


def check_store_reachable(address: str | None, tracking_uri: str) -> None:
    """A remote cluster's nodes cannot open a SQLite file on this machine: refuse before anything is created."""
    if local_database(tracking_uri) is not None and not _on_this_machine(address):
        raise UsageError(f"a Ray cluster needs a tracking server every node can reach, not {tracking_uri} "
                         f"(--ray-address {address}); start `mlflow server` and pass --tracking-uri http://HOST:PORT")


def check_installed() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL) from None


def _host_and_port(address: str) -> tuple[str, int]:
    scheme, _, rest = address.rpartition("://")
    host, colon, port = rest.rpartition(":")
    if not colon or host.endswith(":") or not port.isdigit():  # no port given (or a bare IPv6 address)
        host, port = rest, str(DEFAULT_PORTS.get(scheme, DEFAULT_PORTS[""]))
    return host.strip("[]"), int(port)


def _on_this_machine(address: str | None) -> bool:
    if address in ON_THIS_MACHINE:
        return True
    host, _ = _host_and_port(address)
    try:
        return ipaddress.ip_address(socket.gethostbyname(host) if host != "::1" else host).is_loopback
    except (OSError, ValueError):
        return False


def _probe(address: str) -> None:
    """One TCP connection to the head with a timeout: `ray.init` on a dead address retries for much longer."""
    host, port = _host_and_port(address)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS).close()
    except OSError as exc:
        raise ClusterUnreachable(f"cannot reach the Ray cluster at {address} ({type(exc).__name__} within "
                                 f"{PROBE_TIMEOUT_SECONDS} s); start it with `ray start --head` or pass another "
                                 f"--ray-address") from None


def _auto_address() -> str:
    """The head `--ray-address auto` means: the address `ray start` last wrote on this machine
    (`ray_current_cluster` in Ray's temp folder), else the cluster Ray's own search finds running here.

    Resolved here so that it is probed like any other address: `ray.init("auto")` on a cluster that has
    stopped since retries its connection for minutes.
    """
    from ray._private import services, utils

    recorded = utils.read_ray_address()
    if recorded:
        return recorded
    try:
        return services.canonicalize_bootstrap_address("auto")
    except ConnectionError:
        raise ClusterUnreachable("--ray-address auto: no Ray cluster was started on this machine; start one with "
                                 "`ray start --head` or pass its address") from None


@contextmanager
def connected(address: str, device: torch.device, experiments: int) -> Iterator[RayExecutor]:
    """A `RayExecutor` on the cluster at `address` (see `cluster_address`); on leaving, it waits for every
    invocation the body set going (`RayExecutor.wait`)."""
    check_installed()
    import ray

    if address == "auto":
        address = _auto_address()
    if address not in ON_THIS_MACHINE:
        _probe(address)
    env = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)}
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, configure_logging=True, runtime_env={"env_vars": env} if env else None)
    except ConnectionError as exc:
        raise ClusterUnreachable(f"cannot connect to the Ray cluster at {address}: "
                                 f"{str(exc).splitlines()[0]}") from None
    try:
        if device.type == "cuda" and ray.cluster_resources().get("GPU", 0) < 1:
            raise UsageError(f"--device {device} asked for, but the Ray cluster has no GPU")
        executor = RayExecutor(ray, device, StudyProgress(experiments))
        try:
            yield executor
            executor.wait()
        except BaseException as error:  # Ctrl-C or a failure of the driver's, while submitting or waiting
            executor.abandon(error)
            raise
    finally:
        ray.shutdown()


def _unit_task(invocation: Invocation, parent_run_id: str, unit: Unit, mnist_root: str | None) -> Iterator[str]:
    """The body of one Ray task: says it started (so the driver can count it running), then trains its unit.

    A retry (its worker died) first ends KILLED the runs the dead attempt left
    RUNNING, so each configuration ends with one FINISHED child; models that
    attempt finished are reused unless --force.
    """
    yield STARTED
    store = Store(invocation.tracking_uri)
    mark_killed(store, earlier_attempts(store, parent_run_id, unit.replicate, unit.model))
    train_unit(invocation, parent_run_id, unit, mnist_root)
    yield TRAINED


@dataclass
class _Submitted:
    """An invocation whose parent run is open and whose units are tasks on the cluster."""

    experiment: str
    parent: ExitStack  # holds the open parent run: closing it merges the replicate tables and ends the run
    tasks: dict[Any, Unit]  # the tasks still going
    total: int  # tasks submitted
    started: set[Unit] = field(default_factory=set)
    failures: dict[Unit, BaseException] = field(default_factory=dict)
    when_done: list[Callable[[], None]] = field(default_factory=list)


class RayExecutor:
    """Each unit of every invocation (`units`) as a Ray task with its own CPUs (and a GPU on `--device cuda`).

    `run` opens an invocation's parent run and submits its tasks without
    waiting for them, so that the tasks of every experiment of a study share
    the cluster; `wait` then follows them all and ends each parent run as soon
    as its last task has ended.
    """

    def __init__(self, ray: Any, device: torch.device, progress: StudyProgress):
        self._ray = ray
        self._device = device
        self.progress = progress
        self._submitted: dict[str, _Submitted] = {}  # by parent run id
        # Retried once if its worker dies (a lost node, the OOM killer); an exception is the code's answer.
        self._task = ray.remote(max_retries=1, retry_exceptions=False)(_unit_task)

    def default_threads(self) -> int:
        """One CPU per task: a unit's nets are small, so N tasks on N cores beat fewer tasks with more
        threads each, and a task's thread count is the CPUs it reserves, so tasks never contend for a core."""
        return 1

    def run(self, experiment: Experiment, invocation: Invocation, store: Store) -> str:
        source_env = mnist_data.image_set_of(invocation.config).source_env
        invocation = replace(invocation, data_dir=_absolute(invocation.data_dir or os.environ.get(source_env)),
                             # a task sees only the GPU Ray gave it, as its first
                             device="cuda" if self._device.type == "cuda" else invocation.device)
        mnist_root = str(mnist_data.default_root())
        with ExitStack() as parent_stack:
            parent = parent_stack.enter_context(opened_parent(experiment, invocation, store))
            options = {"num_cpus": invocation.threads, "num_gpus": 1 if self._device.type == "cuda" else 0}
            tasks = {self._task.options(**options).remote(invocation, parent.run_id, unit, mnist_root): unit
                     for unit in units(experiment, invocation.config, invocation.seeds)}
            self._submitted[parent.run_id] = _Submitted(experiment.name, parent_stack.pop_all(), tasks, len(tasks))
        self.progress.tasks_submitted(len(tasks))
        return parent.run_id

    def when_done(self, run_id: str, done: Callable[[], None]) -> None:
        """Call `done` once the invocation of parent `run_id` has ended well (at once if it trained nothing)."""
        submitted = self._submitted.get(run_id)
        if submitted is None:  # an identical invocation had already finished: nothing was submitted
            self.progress.experiment_ended()
            done()
        else:
            submitted.when_done.append(done)

    def wait(self) -> None:
        """Until every task has ended, each parent ended as its last task does; raises if any task failed."""
        failed: list[str] = []
        try:
            while self._submitted:
                for run_id in self._follow_tasks():
                    line = self._end(self._submitted.pop(run_id))
                    if line:
                        failed.append(line)
                        print(line, file=sys.stderr, flush=True)
        finally:
            self.progress.end_line()
        if failed:
            others = f" ({len(failed)} experiments failed, each named above)" if len(failed) > 1 else ""
            raise TaskFailed(failed[0] + others)

    def abandon(self, error: BaseException) -> None:
        """The driver is stopping (Ctrl-C, a failure of its own): cancel every task as Ctrl-C would (their
        runs end KILLED), give them a moment to do so, and end every open parent as `error` ends a run."""
        tasks = [task for submitted in self._submitted.values() for task in submitted.tasks]
        for task in tasks:
            try:
                self._ray.cancel(task)
            except Exception:  # an ended task or a lost cluster: nothing left to cancel
                pass
        if tasks:
            self._ray.wait(tasks, num_returns=len(tasks), timeout=CANCEL_GRACE_SECONDS)
        self.progress.end_line()
        while self._submitted:
            _, submitted = self._submitted.popitem()
            submitted.parent.__exit__(type(error), error, error.__traceback__)

    def _follow_tasks(self) -> list[str]:
        """Waits until some task says it started or ended; the parents whose every task has now ended."""
        ray = self._ray
        pending = {task: run_id for run_id, submitted in self._submitted.items() for task in submitted.tasks}
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
        for task in ready:
            submitted = self._submitted[pending[task]]
            unit = submitted.tasks[task]
            try:
                stage = ray.get(next(task))
            except ray.exceptions.RayError as exc:
                submitted.failures[unit] = exc
                self.progress.task_ended(ok=False, was_started=unit in submitted.started)
                del submitted.tasks[task]
                continue
            if stage == STARTED:
                submitted.started.add(unit)
                self.progress.task_started()
            else:
                self.progress.task_ended(ok=True, was_started=True)
                del submitted.tasks[task]
        return [run_id for run_id, submitted in self._submitted.items() if not submitted.tasks]

    def _end(self, submitted: _Submitted) -> str | None:
        """End the parent of an invocation whose tasks have all ended; the failure line if any of them failed."""
        self.progress.experiment_ended()
        if not submitted.failures:
            submitted.parent.close()
            for done in submitted.when_done:
                done()
            return None
        line = _failure_line(submitted.experiment, submitted.failures, submitted.total)
        error = TaskFailed(line)
        submitted.parent.__exit__(TaskFailed, error, None)
        return line


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _failure_line(experiment: str, failures: dict[Unit, BaseException], tasks: int) -> str:
    """Names the first failed task and says what it raised; a bug's traceback goes to stderr first."""
    unit, error = min(failures.items(), key=lambda item: (item[0].replicate, item[0].model or ""))
    cause = getattr(error, "cause", None)
    if isinstance(cause, Hw1Error):
        what = str(cause)
    elif cause is not None:
        print(getattr(error, "traceback_str", ""), file=sys.stderr)
        what = f"{type(cause).__name__}: {cause}"
    else:
        what = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    others = f" ({len(failures)} of {tasks} tasks failed)" if len(failures) > 1 else ""
    return f"{experiment}: the task of {unit.describe()} failed{others}: {what}; the parent run was marked FAILED"
